"""Runs beside `inferscale run` and, once that process is gone however it went (SIGKILL and
the OOM killer included), stops every process it had started that is still running.

Prefect's temporary API server, the grader's worker and the training launcher are children of
the run; a run that is killed outright cannot stop them, and they would run on as orphans (the
server for good). This process keeps the list of the run's descendants, refreshed every
second, and terminates what is left of it when the run has gone; then, with every process of
the run gone, it removes the DeepSpeed shared-memory buffers of the trainings it saw (a rank
leaving on its own removes them too, but one that was creating them as it left can leave one).
It ignores SIGTERM and SIGINT, which a scheduler sends to the run's whole process group, so
that it outlives the run.

    python -m inferscale.reaper PID
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from inferscale.models.processes import remove_shared_buffers

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


def master_port(cmdline: list[str]) -> int | None:
    """The port a `deepspeed` launcher command line names (`--master_port N` or `=N`)."""
    for i, arg in enumerate(cmdline):
        value = None
        if arg == "--master_port" and i + 1 < len(cmdline):
            value = cmdline[i + 1]
        elif arg.startswith("--master_port="):
            value = arg.partition("=")[2]
        if value is not None and value.isdigit():
            return int(value)
    return None


def watch(owner: psutil.Process, poll_s: float = POLL_S) -> tuple[list[psutil.Process], set[int]]:
    """Wait until `owner` has gone; return the descendants it had, bar this process, and the
    ports of the trainings among them."""
    known: dict[int, psutil.Process] = {}
    ports: set[int] = set()
    while not gone(owner):
        try:
            for child in owner.children(recursive=True):
                if child.pid != os.getpid() and child.pid not in known:
                    known[child.pid] = child
                    try:
                        port = master_port(child.cmdline())
                    except psutil.Error:
                        port = None
                    if port is not None:
                        ports.add(port)
        except psutil.NoSuchProcess:
            break
        time.sleep(poll_s)
    return list(known.values()), ports


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
    processes, ports = watch(owner)
    stop(processes)
    for port in ports:
        remove_shared_buffers(port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
