"""The problem record every data source is mapped to, and its JSONL files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer.

    `steps` is a worked solution as a list of step texts (without the `Step k:` prefix or the
    step tag), the last one stating the answer; None where the source gives no usable steps.
    """

    id: str
    question: str
    answer: str
    steps: list[str] | None = None
    level: int | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)


def write_records(path: str | Path, records: Sequence) -> None:
    """Dataclass records as JSONL, written whole or not at all (via a temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")
    tmp.replace(path)


def read_records(path: str | Path, record_type: type[T]) -> list[T]:
    with Path(path).open() as f:
        return [record_type(**json.loads(line)) for line in f if line.strip()]


def write_problems(path: str | Path, problems: list[Problem]) -> None:
    write_records(path, problems)


def read_problems(path: str | Path) -> list[Problem]:
    return read_records(path, Problem)
