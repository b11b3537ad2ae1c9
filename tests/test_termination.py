"""A run told to stop (SIGTERM, as a scheduler sends it) stops its training ranks and Prefect's
temporary server with it, and keeps the stages it finished."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
from pipeline_config import start_run, tiny_config, write_config

from inferscale.config import load_config
from inferscale.stages import plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def wait_for_training_rank(proc: subprocess.Popen, timeout_s: float) -> list[psutil.Process]:
    """The run's processes once one of them is an SFT rank."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before it was stopped")
        family = psutil.Process(proc.pid).children(recursive=True)
        for child in family:
            try:
                if "inferscale.models.sft" in child.cmdline():
                    return family
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no SFT rank started within {timeout_s} s")


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_terminated_run_stops_its_ranks_and_server_and_keeps_finished_stages(tmp_path):
    config_path = write_config(
        tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs", **{"sft.max_steps": 100000})
    )
    p = plan(load_config(config_path))
    proc = start_run(config_path, tmp_path, "terminated.log")
    family: list[psutil.Process] = []
    try:
        family = wait_for_training_rank(proc, timeout_s=300)
        proc.send_signal(signal.SIGTERM)  # to the run's own process only, not its group
        code = proc.wait(timeout=120)
        deadline = time.monotonic() + 30
        while any(alive(child) for child in family) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [" ".join(child.cmdline()[:4]) for child in family if alive(child)]
    finally:
        for child in family:  # whatever the outcome, leave nothing running
            if alive(child):
                child.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert left == [], f"still running after the run stopped: {left}"
    assert code == 128 + signal.SIGTERM
    said = (tmp_path / "terminated.log").read_text()
    assert "stopped by SIGTERM; finished stages are kept" in said
    assert p.prepare_data.complete and not p.sft["A"].complete
