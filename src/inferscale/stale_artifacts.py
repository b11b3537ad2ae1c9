"""Artifact directories that no current key points to: left by older settings or older code,
found and deleted by `inferscale gc`."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from inferscale.artifacts import COMPLETE_MARKER
from inferscale.locks import DirectoryLock, StageBusy, holder


@dataclass(frozen=True)
class Directory:
    path: Path
    bytes: int
    finished: bool


@dataclass
class Sweep:
    stale: list[Directory] = field(default_factory=list)  # deleted, when the sweep deletes
    busy: list[tuple[Directory, str]] = field(default_factory=list)  # stale, but a run holds it
    kept: list[Directory] = field(default_factory=list)  # what a current key points to


def directory_bytes(path: Path) -> int:
    """The bytes of the files under `path` (links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed meanwhile
                continue
    return total


def artifact_directories(artifacts: Path) -> list[Path]:
    """Every `<stage>/<label>-<key>` directory under a run's `artifacts/` folder."""
    if not artifacts.is_dir():
        return []
    return sorted(
        entry
        for stage in artifacts.iterdir()
        if stage.is_dir() and not stage.is_symlink()
        for entry in stage.iterdir()
        if entry.is_dir() and not entry.is_symlink()
    )


def _delete(directory: Path) -> str | None:
    """Delete an artifact directory with its lock and marker files, under its lock; the
    holder's description instead when a run holds the lock."""
    lock = DirectoryLock(directory, str(directory))
    try:
        lock.acquire()
    except StageBusy:
        return holder(directory) or "a run that took it just now"
    try:
        shutil.rmtree(directory)
        (directory.parent / f".{directory.name}{COMPLETE_MARKER}.tmp").unlink(missing_ok=True)
        lock.path.unlink(missing_ok=True)
    finally:
        lock.release()
    return None


def sweep(artifacts: Path, current: set[Path], delete: bool) -> Sweep:
    """The directories under `artifacts` split into those a `current` key points to (kept),
    stale ones (deleted when `delete`) and stale ones a run is computing now (kept)."""
    current = {path.resolve() for path in current}
    out = Sweep()
    for path in artifact_directories(artifacts):
        directory = Directory(
            path, directory_bytes(path), finished=(path / COMPLETE_MARKER).is_file()
        )
        if path.resolve() in current:
            out.kept.append(directory)
            continue
        busy = holder(path)
        if busy is None and delete:
            busy = _delete(path)
        if busy is None:
            out.stale.append(directory)
        else:
            out.busy.append((directory, busy))
    return out
