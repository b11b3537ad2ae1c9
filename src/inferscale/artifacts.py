"""Stage artifacts on disk, each in a directory named by a content hash of what determines it.

A stage's key hashes its settings, the keys of its inputs and the code of the modules it runs
(`inferscale.stages`), so a changed setting, input or code gives a new directory and an
unchanged one is found complete and skipped. What went into the key is recorded in the
directory when the stage starts, so that a later key can be compared with it. A directory is
complete only once its marker file is written, after everything else; a stage that died leaves
an incomplete directory, which the next run either resumes (evaluation) or starts over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

COMPLETE_MARKER = "_COMPLETE.json"
STARTED_MARKER = "_STARTED"  # when the stage last started working in its directory
KEY_RECORD = "_KEY.json"  # what the directory's key was made of: settings, inputs, code
# Files up to this size are checksummed in the completion marker (a policy's or a PRM's weights
# at the default's sizes, every result file); larger ones, a hub model's shards, by size alone.
CHECKSUM_MAX_BYTES = 256 * 2**20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(directory: Path) -> dict[str, dict]:
    """Every file under `directory` but the completion marker: its size, and its checksum
    where cheap."""
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name == COMPLETE_MARKER:
            continue
        size = path.stat().st_size
        out[name] = {"size": size}
        if size <= CHECKSUM_MAX_BYTES:
            out[name]["sha256"] = sha256_file(path)
    return out


def manifest_problems(directory: Path, manifest: dict[str, dict]) -> list[str]:
    """How the files under `directory` differ from `manifest`: missing, resized or changed."""
    problems = []
    for name, want in manifest.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != want["size"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, not {want['size']}")
        elif "sha256" in want and sha256_file(path) != want["sha256"]:
            problems.append(f"{name} has changed")
    return problems


def content_key(material: dict) -> str:
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class StageArtifact:
    stage: str
    key: str
    path: Path
    label: str = ""  # which one of the stage's artifacts: a policy's name, "prm", "report"
    # What the key hashes: {"stage", "settings", "inputs", "code"}, as JSON reads it back.
    material: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        """How inputs and messages name it: `sft/S`."""
        return f"{self.stage}/{self.label}"

    @property
    def complete(self) -> bool:
        """Finished: its marker is written (whether its files are still whole: `damage`)."""
        return (self.path / COMPLETE_MARKER).is_file()

    def damage(self) -> list[str]:
        """What is wrong with a finished artifact's files against those its marker recorded."""
        try:
            marker = json.loads((self.path / COMPLETE_MARKER).read_text())
        except (OSError, ValueError):
            return [f"{COMPLETE_MARKER} is unreadable"]
        if not isinstance(marker, dict):
            return [f"{COMPLETE_MARKER} is not an object"]
        files = marker.get("files", {})  # a marker from before files were recorded: trusted
        if not isinstance(files, dict):
            return [f"{COMPLETE_MARKER} has no file list"]
        return manifest_problems(self.path, files)

    def invalidate(self) -> None:
        """No longer finished: to be computed again (its files stay until then)."""
        (self.path / COMPLETE_MARKER).unlink(missing_ok=True)

    def mark_started(self) -> None:
        write_json(self.path / KEY_RECORD, self.material)
        (self.path / STARTED_MARKER).write_text(f"{time.time()}\n")

    def recorded_material(self) -> dict | None:
        """The key's components recorded when the stage started here; None without a record
        (a directory from before keys were recorded, or an unreadable one)."""
        try:
            material = json.loads((self.path / KEY_RECORD).read_text())
        except (OSError, ValueError):
            return None
        return material if isinstance(material, dict) else None

    def finished_before(self) -> StageArtifact | None:
        """The most recently finished directory of the same stage and label under another key:
        what this one would replace."""
        found = []
        for path in self.path.parent.glob(f"{self.label}-*"):
            label, _, key = path.name.rpartition("-")
            marker = path / COMPLETE_MARKER
            if label == self.label and key != self.key and marker.is_file():
                found.append((marker.stat().st_mtime, path, key))
        if not found:
            return None
        _, path, key = max(found)
        return StageArtifact(stage=self.stage, key=key, path=path, label=self.label)

    def mark_complete(self, meta: dict) -> None:
        """Write the completion marker with `meta`, and the seconds since the stage last
        started (unless `meta` says how long it took)."""
        started = self.path / STARTED_MARKER
        if "seconds" not in meta and started.is_file():
            meta = {**meta, "seconds": round(time.time() - float(started.read_text()), 1)}
        files = file_manifest(self.path)
        marker = {"stage": self.stage, "key": self.key, **meta, "files": files}
        tmp = self.path.parent / f".{self.path.name}{COMPLETE_MARKER}.tmp"
        tmp.write_text(json.dumps(marker, indent=2))
        tmp.replace(self.path / COMPLETE_MARKER)

    def clear(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)


def stage_artifact(
    root: Path, stage: str, label: str, settings: dict, inputs: dict, code: dict
) -> StageArtifact:
    """The artifact of `stage` (for `label`, e.g. a policy name) keyed by its settings, its
    inputs' keys by name and its code's hash per module."""
    material = {"stage": stage, "settings": settings, "inputs": inputs, "code": code}
    # As the record reads back (tuples become lists), so that it compares equal to it.
    material = json.loads(json.dumps(material, sort_keys=True, default=str))
    key = content_key(material)
    return StageArtifact(
        stage=stage, key=key, path=root / stage / f"{label}-{key}", label=label, material=material
    )


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
