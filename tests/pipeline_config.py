"""A tiny experiment for the flow tests: two 1-2 layer models and a PRM, a few training steps
each, 16 questions, every strategy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from inferscale.models.processes import shared_buffers

REPO = Path(__file__).resolve().parents[1]


def tiny_config(output_dir: Path, **overrides) -> dict:
    config = {
        "name": "tiny",
        "output_dir": str(output_dir),
        "data": {
            "arithmetic": {"modulus": 20, "levels": [1, 2], "train_size": 400, "test_size": 16}
        },
        "policies": [
            {
                "name": "A",
                "hidden_size": 64,
                "num_layers": 1,
                "num_heads": 2,
                "intermediate_size": 128,
            },
            {
                "name": "B",
                "hidden_size": 64,
                "num_layers": 2,
                "num_heads": 2,
                "intermediate_size": 128,
            },
        ],
        "sft": {
            "max_steps": 4,
            "per_device_batch_size": 8,
            "num_processes": 1,
            "threads_per_process": 2,
            "max_length": 64,
            "logging_steps": 1,
            "deepspeed": str(REPO / "configs" / "deepspeed" / "zero2.json"),
        },
        "generation": {"max_new_tokens": 24, "batch_size": 64, "temperature": 1.0},
        "prm": {
            "labels": {
                "questions": 12,
                "heldout_questions": 6,
                "samples_per_question": 2,
                "rollouts_per_step": 2,
            },
            "max_steps": 4,
            "per_device_batch_size": 8,
            "max_length": 64,
        },
        "evaluation": {
            "strategies": [
                "greedy",
                "majority_vote",
                "weighted_vote",
                "best_of_n",
                "rebase",
                "mcts",
                "beam_search",
            ],
            "budgets": [1, 2, 4],
            "search": {
                "budgets": {"rebase": [2, 4], "mcts": [4], "beam_search": [4]},
                "beam_width": 2,
                "max_depth": 4,
                "max_step_tokens": 12,
                "limit": 8,
            },
        },
        "tracking": {"mode": "offline"},
        # The tests' faults fail an evaluation for good: its retry comes at once, not in 30 s.
        "retries": {"evaluate": {"count": 1, "delay_seconds": 0.0}},
    }
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def start_run(config_path: Path, workdir: Path, log_name: str) -> subprocess.Popen:
    """`inferscale run` in a process of its own session, as a user starts it, with its own
    PREFECT_HOME under `workdir`; its output goes to `workdir / log_name`."""
    with (workdir / log_name).open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "inferscale.cli", "run", str(config_path)],
            env={**os.environ, "PREFECT_HOME": str(workdir / "prefect")},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_once_written(
    config_path: Path, workdir: Path, store: Path, records: int, timeout_s: float = 300
) -> list[str]:
    """Start `inferscale run`, SIGKILL its process group once `store` holds `records` lines,
    and return the whole records it had written."""
    proc = start_run(config_path, workdir, "killed.log")
    try:
        deadline = time.monotonic() + timeout_s
        while not (store.exists() and len(store.read_text().splitlines()) >= records):
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (code {proc.returncode}) before it was killed")
            if time.monotonic() > deadline:
                raise AssertionError(f"{store} did not reach {records} records in {timeout_s} s")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return [line for line in store.read_text().splitlines() if line.endswith("}")]


def run_processes(workdir: Path) -> list[psutil.Process]:
    """Every live process of the run started in `workdir`: those whose command line names one
    of its files, and those with its PREFECT_HOME (the CLI's descendants: Prefect's server, the
    grader's worker, the training launcher and ranks), whoever their parent is now."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            home = process.environ().get("PREFECT_HOME", "")
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            home = ""
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(workdir) in cmdline or home.startswith(str(workdir)):
            found.append(process)
    return found


def shared_buffers_left(workdir: Path) -> list[Path]:
    """The DeepSpeed shared-memory buffers of this run's trainings (by the port each used, which
    its log names), not those of any other training on the machine."""
    ports = {
        int(port)
        for log in workdir.rglob("train.log")
        for port in re.findall(r"--master_port[= ](\d+)", log.read_text(errors="replace"))
    }
    return [b for port in sorted(ports) for b in shared_buffers(port)]


def downstream(direct: set[str], inputs: dict[str, tuple[str, ...]]) -> set[str]:
    """The artifacts in `direct` and every artifact that reads one of them, transitively."""
    out = set(direct)
    changed = True
    while changed:
        changed = False
        for name, reads in inputs.items():
            if name not in out and out.intersection(reads):
                out.add(name)
                changed = True
    return out


# The default's artifacts and what each reads: S labels steps (L completing), the PRM starts
# from S, and both policies are evaluated with PRM strategies.
DEFAULT_INPUTS = {
    "prepare_data/data": (),
    "sft/S": ("prepare_data/data",),
    "sft/L": ("prepare_data/data",),
    "label_steps/S": ("prepare_data/data", "sft/S", "sft/L"),
    "train_prm/prm": ("label_steps/S", "sft/S"),
    "evaluate/S": ("prepare_data/data", "sft/S", "train_prm/prm"),
    "evaluate/L": ("prepare_data/data", "sft/L", "train_prm/prm"),
    "analyze/report": ("evaluate/S", "evaluate/L", "train_prm/prm"),
}
