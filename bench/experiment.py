"""What the benchmarks that read a finished experiment share: its checkpoints, test questions,
search settings and PRM, and the vLLM settings a CPU run needs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Finished:
    config: Any  # ExperimentConfig
    policy: str
    policy_dir: Path
    prm_dir: Path
    problems: list
    settings: Any  # SearchSettings

    @property
    def fmt(self):
        return self.settings.fmt


def finished_experiment(config_path: str, policy: str | None) -> Finished:
    """The experiment's artifacts for `policy` (default: the first); exits with the fix when
    the experiment has not been run to the end with this code."""
    from transformers import AutoTokenizer

    from inferscale.config import load_config
    from inferscale.data.prepare import TEST_FILE
    from inferscale.data.prompting import policy_format
    from inferscale.data.records import read_problems
    from inferscale.stages import plan
    from inferscale.tasks.evaluate import search_settings

    config = load_config(config_path)
    p = plan(config)
    policy = policy or config.policies[0].name
    needed = [p.prepare_data, p.sft[policy], p.train_prm]
    missing = [str(a.path) for a in needed if a is None or not a.complete]
    if missing:
        sys.exit(f"error: the experiment is not finished ({missing}); run `make run` first")
    return Finished(
        config=config,
        policy=policy,
        policy_dir=p.sft[policy].path,
        prm_dir=p.train_prm.path,
        problems=read_problems(p.prepare_data.path / TEST_FILE),
        settings=search_settings(
            config,
            policy_format(config.data.format, AutoTokenizer.from_pretrained(p.sft[policy].path)),
        ),
    )


def sampling_requests(finished: Finished, questions: list, width: int, first_seed: int) -> list:
    """One request of `width` whole solutions per question, question i seeded first_seed + i
    (the seeds of a question's samples follow on from its own)."""
    from inferscale.generation.base import Request

    gen = finished.config.generation
    return [
        Request(
            prompt=finished.fmt.prompt(q.question),
            n=width,
            temperature=gen.temperature,
            top_p=gen.top_p,
            max_new_tokens=gen.max_new_tokens,
            seed=first_seed + i,
        )
        for i, q in enumerate(questions)
    ]


def with_backend(generation, backend: str, kv_cache_gib: float):
    """The generation section with `backend`; for vLLM on a CPU, a KV cache of kv_cache_gib and
    chunked prefill off unless the config sets it (see the README)."""
    if backend == "vllm":
        update: dict[str, Any] = {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)}
        if generation.vllm.enable_chunked_prefill is None:
            update["enable_chunked_prefill"] = False
        vllm = generation.vllm.model_copy(update=update)
        return generation.model_copy(update={"backend": backend, "vllm": vllm})
    return generation.model_copy(update={"backend": backend})


def open_scorer(finished: Finished):
    from inferscale.tasks.prm_reader import open_prm

    return open_prm(finished.config, finished.prm_dir)
