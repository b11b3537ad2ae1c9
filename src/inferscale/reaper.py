"""Runs beside `inferscale run` and, once that process is gone however it went (SIGKILL and
the OOM killer included), stops every process it had started that is still running.

Prefect's temporary API server, the grader's worker and the training launcher are children of
the run; a run that is killed outright cannot stop them, and they would run on as orphans (the
server for good). This process keeps the list of the run's descendants, refreshed every
second, and terminates what is left of it when the run has gone. It ignores SIGTERM and SIGINT,
which a scheduler sends to the run's whole process group, so that it outlives the run.

    python -m inferscale.reaper PID
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 1.0
GRACE_S = 5.0


def start_for(pid: int) -> subprocess.Popen:
    """Start the reaper of process `pid` (normally the caller)."""
    return subprocess.Popen(
        [sys.executable, "-m", "inferscale.reaper", str(pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def watch(owner: psutil.Process, poll_s: float = POLL_S) -> list[psutil.Process]:
    """Wait until `owner` has gone; return the descendants it had, bar this process."""
    known: dict[int, psutil.Process] = {}
    while not gone(owner):
        try:
            for child in owner.children(recursive=True):
                if child.pid != os.getpid():
                    known.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(poll_s)
    return list(known.values())


def stop(processes: list[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM to those still running (psutil checks each is still the process it was, not a
    reused pid), SIGKILL to what is left after `grace_s`."""
    alive = [p for p in processes if not gone(p)]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            continue
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            continue


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        owner = psutil.Process(int(argv[0]))
    except psutil.NoSuchProcess:
        return 0
    stop(watch(owner))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
