"""Start a training entry point (SFT, PRM) under the real `deepspeed` launcher, one process per
rank, and check its result."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from inferscale.config import ExperimentConfig, PolicyConfig, SFTConfig
from inferscale.models.files import PRM_SUMMARY_FILE, SFT_SUMMARY_FILE
from inferscale.models.processes import (
    OWNER_ENV,
    owner_token,
    remove_shared_buffers,
    stop_group,
)
from inferscale.models.training_progress import read_step, step_file
from inferscale.numerics import pinned_env
from inferscale.progress import bars_shown, terminal_progress

SFT_MODULE = "inferscale.models.sft"
PRM_MODULE = "inferscale.models.prm_train"


# DeepSpeed's CPU communication op, which every CPU rank JIT-loads through torch.
SHM_COMM_OP = "deepspeed_shm_comm"
# A lock younger than this may belong to a builder that has not opened it yet or is closing it.
STALE_LOCK_AGE_S = 5.0
STEP_POLL_S = 0.5  # how often the step a training has reached is read, for its bar

logger = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def op_build_lock(op: str = SHM_COMM_OP) -> Path:
    """The lock file torch takes while it builds or checks `op`'s JIT extension."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(op, verbose=False)) / "lock"


def is_open_by_a_process(path: Path) -> bool:
    target = os.path.realpath(path)
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == target:
                return True
        except OSError:  # gone, or another user's
            continue
    return False


def clear_stale_build_lock(lock: Path, now: float | None = None) -> bool:
    """Remove `lock` when no process holds it; return whether it did.

    torch's lock is a bare file its holder keeps open and deletes when done: a rank killed while
    holding it (an interrupted run) leaves it behind, and every later rank then waits on it
    forever, silently. Where /proc cannot tell who holds it, the lock is left alone."""
    try:
        age = (time.time() if now is None else now) - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < STALE_LOCK_AGE_S or not Path("/proc/self/fd").is_dir() or is_open_by_a_process(lock):
        return False
    lock.unlink(missing_ok=True)
    return True


def sft_spec(
    policy: PolicyConfig,
    sft: SFTConfig,
    fmt: dict,
    tokenizer_dir: str,
    train_file: Path,
    output_dir: Path,
    seed: int,
    report_to: list[str],
) -> dict:
    model = (
        {"hub_id": policy.hub_id}
        if policy.hub_id
        else {
            "hidden_size": policy.hidden_size,
            "num_layers": policy.num_layers,
            "num_heads": policy.num_heads,
            "intermediate_size": policy.ffn_size,
        }
    )
    return {
        "model": model,
        "tokenizer_dir": tokenizer_dir,
        "train_file": str(train_file),
        "output_dir": str(output_dir),
        "format": fmt,
        "deepspeed_config": sft.deepspeed,
        "max_length": sft.max_length,
        "seed": seed,
        "max_steps": sft.max_steps,
        "per_device_batch_size": sft.per_device_batch_size,
        "gradient_accumulation_steps": sft.gradient_accumulation_steps,
        "learning_rate": policy.learning_rate or sft.learning_rate,
        "warmup_steps": sft.warmup_steps,
        "lr_scheduler": sft.lr_scheduler,
        "weight_decay": sft.weight_decay,
        "bf16": sft.bf16,
        "use_cpu": sft.use_cpu,
        "threads_per_rank": sft.threads_per_process,
        "logging_steps": sft.logging_steps,
        "report_to": report_to,
        "run_name": f"sft-{policy.name}",
    }


def prm_spec(
    config: ExperimentConfig,
    init_model: str,
    train_file: Path,
    heldout_file: Path | None,
    output_dir: Path,
    report_to: list[str],
) -> dict:
    """PRM training's spec: the `prm` section, and its training settings resolved
    (`ExperimentConfig.prm_training`), which are what the stage's key holds."""
    prm, training = config.prm, config.prm_training
    assert prm is not None
    return {
        "init_model": init_model,
        "train_file": str(train_file),
        "eval_file": str(heldout_file) if heldout_file else None,
        "output_dir": str(output_dir),
        "deepspeed_config": training.deepspeed,
        "format": config.data.format.plain_settings(),
        "good_token": prm.good_token,
        "bad_token": prm.bad_token,
        "label": prm.label,
        "max_length": prm.max_length,
        "seed": config.seed,
        "max_steps": prm.max_steps,
        "per_device_batch_size": prm.per_device_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "learning_rate": prm.learning_rate,
        "warmup_steps": prm.warmup_steps,
        "lr_scheduler": training.lr_scheduler,
        "weight_decay": training.weight_decay,
        "bf16": training.bf16,
        "use_cpu": training.use_cpu,
        "threads_per_rank": training.threads_per_process,
        "logging_steps": training.logging_steps,
        "report_to": report_to,
        "run_name": "train_prm",
        # the held-out scoring after training: speed settings
        "eval_batch_size": prm.batch_size,
        "eval_device": config.generation.device,
        "exact_validity": _exact_validity(config),
    }


def _exact_validity(config: ExperimentConfig) -> dict | None:
    """What the held-out metrics need to judge steps by exact validity: the synthetic task's
    modulus and answer phrase; None for other tasks."""
    task = config.data.arithmetic
    if task is None:
        return None
    return {
        "modulus": task.modulus,
        "answer_phrase": config.data.format.step_format().answer_phrase,
    }


class LaunchSettings(Protocol):
    """How many processes (and nodes) a training run uses: SFTConfig, PRMTrainingConfig."""

    @property
    def num_processes(self) -> int: ...
    @property
    def num_nodes(self) -> int: ...
    @property
    def hostfile(self) -> str | None: ...
    @property
    def use_cpu(self) -> bool: ...
    @property
    def threads_per_process(self) -> int: ...


def launcher_command(launch: LaunchSettings, module: str, spec_path: Path, port: int) -> list[str]:
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which(
        "deepspeed"
    )
    if launcher is None:
        raise TrainingFailed("the `deepspeed` launcher is not on PATH; install the package deps")
    cmd = [launcher, "--num_gpus", str(launch.num_processes), "--master_port", str(port)]
    if launch.num_nodes > 1:
        cmd += ["--num_nodes", str(launch.num_nodes), "--hostfile", str(launch.hostfile)]
    return cmd + ["--module", module, "--spec", str(spec_path)]


# The last line of a Python traceback, as a rank prints it (DeepSpeed prefixes "[rank0]: ").
_ERROR_LINE = re.compile(
    r"^(?:\[rank\d+\]:\s*)?(?:[\w.]+\.)?(\w*(?:Error|Exception|Diverged)): (.+)$"
)


def error_line(lines: list[str]) -> str | None:
    """The exception a rank died of, from its log: "TrainingDiverged: ...", or None."""
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    return None


def run_training(
    module: str,
    spec: dict,
    launch: LaunchSettings,
    env: dict[str, str],
    log_path: Path,
    summary_name: str,
    spec_name: str,
    what: str,
) -> dict:
    """Write the spec into its output_dir, run `module` under the launcher, and return the
    summary (`summary_name`) that rank 0 writes last; raise with the log's tail otherwise."""
    output_dir = Path(spec["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    spec_path = output_dir / spec_name
    spec_path.write_text(json.dumps(spec, indent=2))
    full_env = {**pinned_env(os.environ), **env, OWNER_ENV: owner_token()}
    if launch.use_cpu:
        full_env["DS_ACCELERATOR"] = "cpu"
    full_env.setdefault("OMP_NUM_THREADS", str(launch.threads_per_process))
    port = free_port()
    lock = op_build_lock() if launch.use_cpu else None
    cleared = lock is not None and clear_stale_build_lock(lock)
    try:
        with log_path.open("w") as log:
            if cleared:
                note = f"removed {lock}, left by an interrupted run: {what} would wait on it"
                logger.warning(note)
                log.write(note + "\n")
                log.flush()
            # A group of its own, so that a stop reaches the launcher and every rank.
            proc = subprocess.Popen(
                launcher_command(launch, module, spec_path, port),
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                _wait_showing_steps(proc, output_dir, spec.get("max_steps"), what)
            except BaseException:  # a stop (SIGTERM, Ctrl-C) or a crash of this process
                stop_group(proc)
                raise
    finally:
        step_file(output_dir).unlink(missing_ok=True)
        if launch.use_cpu:
            remove_shared_buffers(port)
    summary_path = output_dir / summary_name
    if proc.returncode != 0 or not summary_path.is_file():
        lines = log_path.read_text(errors="replace").splitlines(keepends=True)
        cause = error_line(lines)
        raise TrainingFailed(
            f"{what} exited with code {proc.returncode}{': ' + cause if cause else ''}; "
            f"full log: {log_path}\n--- last lines ---\n{''.join(lines[-30:])}"
        )
    return json.loads(summary_path.read_text())


def _wait_showing_steps(
    proc: subprocess.Popen, output_dir: Path, max_steps: int | None, what: str
) -> None:
    """Wait for the training to end, with a bar of its steps on a terminal."""
    if not bars_shown():
        proc.wait()
        return
    path = step_file(output_dir)
    with terminal_progress(f"{what} {output_dir.name}", max_steps, unit="step") as advance:
        shown = 0
        while True:
            try:
                proc.wait(timeout=STEP_POLL_S)
                finished = True
            except subprocess.TimeoutExpired:
                finished = False
            step = read_step(path)  # once more after the end: the bar ends at the last step
            if step is not None and step > shown:
                advance(step - shown)
                shown = step
            if finished:
                return


def run_sft(spec: dict, sft: SFTConfig, env: dict[str, str], log_path: Path) -> dict:
    """Run SFT (`inferscale.models.sft`); return its train_summary.json."""
    return run_training(
        SFT_MODULE, spec, sft, env, log_path, SFT_SUMMARY_FILE, "sft_spec.json", "SFT"
    )


def run_prm_training(
    spec: dict, launch: LaunchSettings, env: dict[str, str], log_path: Path
) -> dict:
    """Run PRM training (`inferscale.models.prm_train`); return its prm_summary.json."""
    return run_training(
        PRM_MODULE, spec, launch, env, log_path, PRM_SUMMARY_FILE, "prm_spec.json", "PRM training"
    )
