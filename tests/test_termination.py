"""A run that is stopped, by SIGTERM to its process or to its whole process group (as Slurm and
Kubernetes send it) or by SIGKILL, leaves no training process or shared-memory buffer behind,
exits promptly, and keeps the stages it finished."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from pipeline_config import (
    run_processes,
    shared_buffers_left,
    start_run,
    tiny_config,
    write_config,
)

from inferscale.config import load_config
from inferscale.stages import plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

# Seconds the CLI may take to exit after SIGTERM (Slurm and Kubernetes kill after 30).
PROMPT_EXIT_S = 25


def is_rank(process: psutil.Process) -> bool:
    """A training rank itself, not the `deepspeed` runner, whose arguments also name the module."""
    cmdline = process.cmdline()
    return "-m" in cmdline and "inferscale.models.sft" in cmdline


def wait_for_rank(proc: subprocess.Popen, workdir: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before it was stopped")
        for process in run_processes(workdir):
            try:
                if is_rank(process):
                    return
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no SFT rank started within {timeout_s} s")


def training_left(workdir: Path, within_s: float) -> list[str]:
    deadline = time.monotonic() + within_s
    while (left := run_processes(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [" ".join(p.cmdline()[:4]) for p in left if p.is_running()]


@pytest.mark.parametrize("how", ["sigterm-process", "sigterm-group", "sigkill-process"])
def test_a_stopped_run_leaves_no_training_behind_and_keeps_finished_stages(tmp_path, how):
    config_path = write_config(
        tmp_path / "tiny.yaml",
        tiny_config(tmp_path / "runs", **{"sft.max_steps": 100000, "tracking.mode": "disabled"}),
    )
    p = plan(load_config(config_path))
    proc = start_run(config_path, tmp_path, "stopped.log")
    try:
        wait_for_rank(proc, tmp_path, timeout_s=300)
        time.sleep(2)  # into training: the rank has made its shared-memory buffer
        stopped_at = time.monotonic()
        if how == "sigterm-process":
            proc.send_signal(signal.SIGTERM)
        elif how == "sigterm-group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.kill()
        code = proc.wait(timeout=120)
        exit_s = time.monotonic() - stopped_at
        left = training_left(tmp_path, within_s=15)
    finally:
        for process in run_processes(tmp_path):  # whatever the outcome, leave nothing running
            process.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert left == [], f"still running after the run stopped: {left}"
    assert shared_buffers_left(tmp_path) == []
    assert p.prepare_data.complete and not p.sft["A"].complete
    if how == "sigkill-process":
        assert code == -signal.SIGKILL
        return
    assert code == 128 + signal.SIGTERM
    assert exit_s < PROMPT_EXIT_S, f"the run took {exit_s:.0f} s to exit after SIGTERM"
    said = (tmp_path / "stopped.log").read_text()
    assert "stopped by SIGTERM; finished stages are kept" in said
