"""Per-question result records, appended to JSONL as each question finishes.

Every record is written with one `write` and flushed to disk, so a run killed at any point
leaves whole records plus at most one truncated last line, which reading skips; evaluation then
resumes from the ids already written. A record is keyed by its question id: the store holds at
most one per id, and a line anywhere in the file that is not a whole record (a damaged disk
block, an edit by hand) is skipped and reported, so its question is simply done again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".damaged"


@dataclass
class Scan:
    """What a store file holds: one record per id in file order, and what was set aside."""

    records: list[dict] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)  # 1-based line numbers
    duplicates: list[int] = field(default_factory=list)  # lines repeating an earlier id
    truncated_tail: bool = False


def _record(line: bytes) -> dict | None:
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value
    return None


class ResultStore:
    """A store file with one writer. With `base`, a read-only store whose records count as this
    one's (a shard's view of the stage's merged store): they are read, and not written again."""

    def __init__(self, path: str | Path, base: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.base = ResultStore(base) if base is not None else None
        self._ids: set[str] | None = None  # this writer's view, once it has read the file
        self._base_ids: set[str] = set()

    def scan(self) -> Scan:
        scan = Scan()
        if not self.path.exists():
            return scan
        seen: set[str] = set()
        with self.path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    scan.truncated_tail = True  # the line being written when the run died
                    break
                record = _record(line)
                if record is None:
                    scan.damaged.append(number)
                elif record["id"] in seen:
                    scan.duplicates.append(number)
                else:
                    seen.add(record["id"])
                    scan.records.append(record)
        if scan.damaged or scan.duplicates:
            logger.warning(
                "%s: %d damaged and %d repeated line(s) skipped (first at line %d); "
                "their questions count once, and damaged ones are done again",
                self.path,
                len(scan.damaged),
                len(scan.duplicates),
                min(scan.damaged + scan.duplicates),
            )
        return scan

    def read(self) -> list[dict]:
        """One record per question id, in the order they were written (the base's first)."""
        if self.base is None:
            return self.scan().records
        records = self.base.read()
        ids = {r["id"] for r in records}
        return records + [r for r in self.scan().records if r["id"] not in ids]

    def done_ids(self) -> set[str]:
        return {r["id"] for r in self.read()}

    def append(self, records: list[dict]) -> list[dict]:
        """Write the records whose ids the store does not hold yet; return those written."""
        if self._ids is None or self._tail_is_cut():
            self._ids = self._repair()
            self._base_ids = self.base.done_ids() if self.base is not None else set()
        known = self._ids | self._base_ids
        fresh, ids = [], set()
        for r in records:
            if r["id"] not in known and r["id"] not in ids:
                fresh.append(r)
                ids.add(r["id"])
        if fresh:
            with self.path.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r) + "\n" for r in fresh))
                f.flush()
                os.fsync(f.fileno())
            self._ids |= ids
        return fresh

    def replace(self, records: list[dict]) -> None:
        """Make the file hold exactly `records`, atomically (damaged lines set aside first)."""
        self._repair()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        self._ids = {r["id"] for r in records}

    def _tail_is_cut(self) -> bool:
        try:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                return f.read(1) != b"\n"
        except OSError:  # empty or missing
            return False

    def _repair(self) -> set[str]:
        """Before the first write: drop a truncated last line, and move damaged or repeated
        lines aside (to `<file>.damaged`, kept for inspection) so the file holds whole, distinct
        records again. Returns the ids it holds."""
        scan = self.scan()
        set_aside = set(scan.damaged) | set(scan.duplicates)
        if set_aside or scan.truncated_tail:
            lines = self.path.read_bytes().splitlines(keepends=True)
            if set_aside:
                with (self.path.parent / (self.path.name + DAMAGED_SUFFIX)).open("ab") as f:
                    f.writelines(b"%d: %s" % (n, lines[n - 1]) for n in sorted(set_aside))
            kept = [
                line
                for n, line in enumerate(lines, start=1)
                if n not in set_aside and line.endswith(b"\n")
            ]
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("wb") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        return {r["id"] for r in scan.records}
