"""The processes of one training run: the launcher's process group, the shared-memory buffers
its ranks make, and the watch each rank keeps on the run that started it.

A training run is `deepspeed` (the runner) -> `deepspeed.launcher.launch` -> one process per
rank. The runner does not pass a stop on to the launcher, so the run is started as a process
group of its own and stopped as a group. A run killed outright (SIGKILL, the OOM killer) cannot
stop anything: each rank watches the process that started it and leaves when it is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil

SHM = Path("/dev/shm")
# Which process (host, pid and start time, so a reused pid does not count) a rank belongs to.
OWNER_ENV = "INFERSCALE_TRAINING_OWNER"
OWNER_POLL_S = 1.0
# How long a stopped run's processes get to exit before they are killed.
STOP_GRACE_S = 5.0


def shared_buffers(port: int, shm: Path = SHM) -> list[Path]:
    """The shared-memory buffers DeepSpeed's CPU all-reduce made for a run on `port`."""
    return sorted(shm.glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


def remove_shared_buffers(port: int, shm: Path = SHM) -> None:
    """DeepSpeed's CPU communication op leaves a buffer per rank in /dev/shm (about 70 MB
    each) when its processes exit; without this, every training run would leak them."""
    for path in shared_buffers(port, shm):
        path.unlink(missing_ok=True)


def owner_token(pid: int | None = None) -> str:
    """This process (or `pid`) as a rank's OWNER_ENV names it."""
    process = psutil.Process(pid)
    return f"{socket.gethostname()}:{process.pid}:{process.create_time()!r}"


def owner_alive(token: str) -> bool:
    """Whether the process `token` names still runs; a process on another host counts as alive
    (a rank there cannot see it, and the launcher's own transport stops those ranks)."""
    host, pid, started = token.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    try:
        process = psutil.Process(int(pid))
        return process.create_time() == float(started) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def leave_with_owner(poll_s: float = OWNER_POLL_S) -> threading.Thread | None:
    """In a rank: exit, removing the run's shared buffers, once the process named by OWNER_ENV
    has gone. The launcher then stops the other ranks, and the runner exits with it.

    A rank that ends on its own (finished or failed) removes them too as it exits: every rank
    mapped them at start-up and none opens them by name again, and were the owner killed in the
    last second of training, the rank would be gone before its watch noticed and the owner would
    never remove them."""
    token = os.environ.get(OWNER_ENV)
    if not token:
        return None
    port = int(os.environ.get("MASTER_PORT", "0"))
    if port:
        atexit.register(remove_shared_buffers, port)

    def watch() -> None:
        while owner_alive(token):
            time.sleep(poll_s)
        if port:
            remove_shared_buffers(port)
        os._exit(128 + signal.SIGTERM)

    thread = threading.Thread(target=watch, name="owner-watch", daemon=True)
    thread.start()
    return thread


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running (zombies not counted)."""
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop the process group `proc` leads (started with start_new_session): SIGTERM, which the
    launcher passes to its ranks, then SIGKILL to whatever is left after `grace_s`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not group_alive(proc.pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
