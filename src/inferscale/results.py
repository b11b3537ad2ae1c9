"""Per-question result records, appended to JSONL as each question finishes.

Every record is written with one `write` and flushed to disk, so a run killed at any point
leaves whole records plus at most one truncated last line, which reading skips; evaluation then
resumes from the ids already written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        with self.path.open() as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a last line without its newline is dropped by the next append
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # the line being written when the run died
        return records

    def done_ids(self) -> set[str]:
        return {r["id"] for r in self.read()}

    def append(self, records: list[dict]) -> None:
        self._drop_truncated_tail()
        with self.path.open("a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _drop_truncated_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])
