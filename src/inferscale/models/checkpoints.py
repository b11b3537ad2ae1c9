"""Checkpoints an experiment is given rather than trains: a local Hugging Face directory or a hub
id, and what identifies each in the keys of the stages that read it.

A local directory is identified by the content of its files (names and SHA-256), not its path:
a moved copy keys alike, and a file replaced in it keys anew. Hashing a 15 GB checkpoint takes
minutes, so each file's hash is kept in a cache file beside the run, valid while the file's
size, modification time and inode are those it was hashed at (git's index does the same). A
file modified within the last seconds is hashed again every time: a write in the same clock tick
as the hashing would leave the cached entry looking current.

A hub id is identified by its id and `revision`. Only a commit hash pins the files: a branch
(`main`, the default) moves, and the key does not follow it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from inferscale.artifacts import sha256_file

# Files a hub download or an editor leaves beside the weights that never change a model.
IGNORED_PARTS = frozenset({".git", ".cache", ".huggingface", "__pycache__"})
RACY_SECONDS = 2.0


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: one line naming it and the fix."""


def is_local(reference: str) -> bool:
    """Whether `reference` names a local directory (else it is taken for a hub id)."""
    return Path(reference).expanduser().is_dir()


def checkpoint_files(directory: Path) -> list[Path]:
    """The files that make up a local checkpoint, sorted by relative path."""
    out = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory)
        if path.is_file() and not IGNORED_PARTS.intersection(rel.parts):
            out.append(path)
    return sorted(out, key=lambda p: p.relative_to(directory).as_posix())


def _read_cache(cache: Path | None) -> dict:
    if cache is None:
        return {}
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: Path | None, entries: dict) -> None:
    """Best effort: a cache that cannot be written costs time, never a result."""
    if cache is None:
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, sort_keys=True))
        tmp.replace(cache)
    except OSError:
        pass


def directory_digest(directory: str | Path, cache: Path | None = None) -> str:
    """SHA-256 over the relative path and content hash of every file of `directory`."""
    directory = Path(directory).expanduser().resolve()
    files = checkpoint_files(directory)
    if not files:
        raise CheckpointError(f"{directory} holds no files; give a Hugging Face model folder")
    entries = _read_cache(cache)
    changed = False
    now = time.time()
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = entries.get(str(path))
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            file_hash = entry["sha256"]
        else:
            file_hash = sha256_file(path)
            if now - stat.st_mtime > RACY_SECONDS:
                entries[str(path)] = {"stamp": stamp, "sha256": file_hash}
                changed = True
        digest.update(f"{path.relative_to(directory).as_posix()}\0{file_hash}\n".encode())
    if changed:
        _write_cache(cache, entries)
    return digest.hexdigest()


def checkpoint_identity(reference: str, revision: str | None, cache: Path | None = None) -> str:
    """What keys a given checkpoint: `sha256:<content>` for a local directory, `hub:<id>@<rev>`
    for a hub id (`@main` when no revision is given)."""
    if is_local(reference):
        return f"sha256:{directory_digest(reference, cache)[:32]}"
    return f"hub:{reference}@{revision or 'main'}"


def local_checkpoint(reference: str, revision: str | None) -> str:
    """A directory holding the checkpoint: the local one as it is, a hub id downloaded (or found
    in the Hugging Face cache) at `revision`."""
    if is_local(reference):
        return str(Path(reference).expanduser().resolve())
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return snapshot_download(reference, revision=revision)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        at = f" at revision {revision}" if revision else ""
        raise CheckpointError(
            f"cannot get {reference}{at} from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); check the id and "
            "revision and the network, or give a local model folder"
        ) from None
