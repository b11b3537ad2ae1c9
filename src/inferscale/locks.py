"""One writer per stage artifact: a run holds a lock beside an artifact's directory while it
computes it, so two runs into one output folder cannot clear or append to each other's work.

The lock is an advisory `flock` on a file next to the directory: the kernel drops it when its
holder exits however it exits (SIGKILL included), so the lock of a dead run is simply free for
the next one. The file keeps who holds it, for the message another run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class StageBusy(RuntimeError):
    pass


def lock_path(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.lock"


def _holder() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:300],
    }


def _describe(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']}, since {h['since']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


def holder(directory: Path) -> str | None:
    """Who holds the lock of `directory` now (as `StageBusy` names them), or None when no run
    does; the lock file is neither made nor written."""
    try:
        fd = os.open(lock_path(directory), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(lock_path(directory))
    finally:
        os.close(fd)  # which drops the shared lock, if it was taken
    return None


class DirectoryLock:
    """The lock of one artifact directory, taken without waiting."""

    def __init__(self, directory: Path, what: str):
        self.path = lock_path(directory)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StageBusy(
                f"{self.what} is being computed by another run ({_describe(self.path)}); "
                "wait for that run to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
