"""The reaper beside `inferscale run`: once the run is gone, its processes are stopped and its
trainings' shared-memory buffers removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from inferscale.models.launch import free_port
from inferscale.models.processes import SHM
from inferscale.reaper import master_port, start_for


@pytest.mark.parametrize(
    ("cmdline", "port"),
    [
        (["deepspeed", "--num_gpus", "1", "--master_port", "29533", "-m", "x"], 29533),
        (["python", "-m", "deepspeed.launcher.launch", "--master_port=41000", "x"], 41000),
        (["python", "-m", "inferscale.models.sft", "--spec", "s.json"], None),
        (["deepspeed", "--master_port"], None),
        (["deepspeed", "--master_port", "auto"], None),
    ],
)
def test_the_port_of_a_training_is_read_from_its_command_line(cmdline, port):
    assert master_port(cmdline) == port


def test_a_killed_run_leaves_neither_its_processes_nor_its_trainings_buffers():
    port = free_port()
    buffer = SHM / f"deepspeed_allreduce_buffer_0_127.0.0.1_{port}_0"
    other = SHM / f"deepspeed_allreduce_buffer_0_127.0.0.1_{port}1_0"
    # The run: a process whose child looks like a training launcher on `port`.
    training = f"import time; time.sleep(600)  # --master_port {port}"
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {training!r}, '--master_port', '{port}'])\n"
            "time.sleep(600)\n",
        ]
    )
    try:
        reaper = start_for(run.pid)
        deadline = time.monotonic() + 60
        while len(psutil.Process(run.pid).children()) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        (child,) = psutil.Process(run.pid).children()
        for path in (buffer, other):
            path.write_bytes(b"x")
        time.sleep(2.5)  # the reaper has seen the child (it looks every second)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        assert reaper.wait(timeout=60) == 0
        assert not child.is_running()
        assert not buffer.exists()
        assert other.exists()  # another run's
    finally:
        run.kill()
        for path in (buffer, other):
            path.unlink(missing_ok=True)
