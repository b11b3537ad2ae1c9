"""A run that is stopped, by SIGTERM to its process or to its whole process group (as Slurm and
Kubernetes send it) or by SIGKILL, leaves no training process or shared-memory buffer behind,
exits promptly, and keeps the stages it finished."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from pipeline_config import start_run, tiny_config, write_config

from inferscale.config import load_config
from inferscale.models.processes import shared_buffers
from inferscale.stages import plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

# Seconds the CLI may take to exit after SIGTERM (Slurm and Kubernetes kill after 30).
PROMPT_EXIT_S = 25


def is_rank(process: psutil.Process) -> bool:
    """A training rank itself, not the `deepspeed` runner, whose arguments also name the module."""
    cmdline = process.cmdline()
    return "-m" in cmdline and "inferscale.models.sft" in cmdline


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


def shared_buffers_left(workdir: Path) -> list[Path]:
    """The DeepSpeed shared-memory buffers of this run's trainings (by the port each used, which
    its log names), not those of any other training on the machine."""
    ports = {
        int(port)
        for log in workdir.rglob("train.log")
        for port in re.findall(r"--master_port[= ](\d+)", log.read_text(errors="replace"))
    }
    return [b for port in sorted(ports) for b in shared_buffers(port)]


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
