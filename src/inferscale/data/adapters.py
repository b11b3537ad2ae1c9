"""Adapters mapping upstream math datasets to `Problem` records.

Each source is read with `datasets`, from a hub id or a local json/jsonl/parquet/csv file. Worked
solutions become steps in the project's step format: one line of text each, the last one ending
with the answer phrase (`... The answer is: X`), as in Math-Shepherd.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets

from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.grading import last_boxed

# Math-Shepherd's format is the project's default, so its answer phrase also parses upstream text.
_FORMAT = StepFormat()
_ANSWER = _FORMAT.answer_phrase
_SHEPHERD_TAG = "ки"

_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}

_CALCULATOR = re.compile(r"<<[^<>\n]*>>")
_STEP_PREFIX = re.compile(r"^step\s*\d+\s*:\s*", re.IGNORECASE)
_FIRST_STEP = re.compile(r"\bstep\s*1\s*:", re.IGNORECASE)
# Spans never split inside: inline and display math, LaTeX environments, Asymptote figures.
_MATH_SPAN = re.compile(
    r"\$\$.*?\$\$|(?<!\\)\$(?:\\.|[^$\\])*\$|\\\[.*?\\\]|\\\(.*?\\\)"
    r"|\\begin\{([a-zA-Z]+\*?)\}.*?\\end\{\1\}|\[asy\].*?\[/asy\]",
    re.DOTALL,
)
_SENTENCE_END_IN_MATH = re.compile(r"[.!?]\s*(?:\$+|\\\])$")
_BREAK = re.compile(r"\s*\n\s*|(?<=[.!?])(?<!Mr\.)(?<!Mrs\.)(?<!Ms\.)(?<!Dr\.)\s+(?=[A-Z])")


@dataclass(frozen=True)
class LabelledSolution:
    """A Math-Shepherd solution: step texts (no `Step k:` prefix, no tag) and one label each."""

    question: str
    steps: list[str]
    labels: list[bool]


@dataclass(frozen=True)
class Adapter:
    columns: tuple[str, ...]
    convert: Callable[[dict, str], Problem | None]  # (row, default id); None drops the row
    subset: str | None = None  # hub config used when the caller names none


def load_problems(
    source: str,
    path_or_id: str,
    split: str = "test",
    limit: int | None = None,
    subset: str | None = None,
) -> list[Problem]:
    """Problems of `source` (a key of ADAPTERS) from a hub id or a local file.

    Ids are the upstream id where there is one, else `{source}-{split}-{row index}`.
    """
    if source not in ADAPTERS:
        raise ValueError(f"unknown source {source!r}; known sources: {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[source]
    rows = _load_rows(source, adapter.columns, path_or_id, split, subset or adapter.subset)
    problems = []
    for i, row in enumerate(rows):
        if limit is not None and len(problems) >= limit:
            break
        problem = adapter.convert(row, f"{source}-{split}-{i}")
        if problem is not None:
            problems.append(problem)
    return problems


def load_step_labels(
    path_or_id: str, split: str = "train", limit: int | None = None
) -> list[LabelledSolution]:
    """Math-Shepherd solutions with their per-step correctness labels (`+` is True)."""
    rows = _load_rows("math_shepherd", ("input", "label"), path_or_id, split, None)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return [
        LabelledSolution(*_parse_shepherd(row["input"], row["label"], i))
        for i, row in enumerate(rows)
    ]


def _load_rows(
    source: str, columns: tuple[str, ...], path_or_id: str, split: str, subset: str | None
) -> datasets.Dataset:
    builder = _BUILDERS.get(Path(path_or_id).suffix.lower())  # hub ids have no such suffix
    if builder is None:
        ds = datasets.load_dataset(path_or_id, subset, split=split)
    elif not Path(path_or_id).is_file():
        raise ValueError(f"{source}: file not found: {path_or_id}")
    else:
        ds = datasets.load_dataset(builder, data_files={split: path_or_id}, split=split)
    for column in columns:
        if column not in ds.column_names:
            raise ValueError(
                f"{source}: {path_or_id} has no column {column!r} "
                f"(columns found: {', '.join(ds.column_names)})"
            )
    return ds


def _math(row: dict, pid: str) -> Problem:
    answer = last_boxed(row["solution"])
    if answer is None:
        raise ValueError(f"math: no \\boxed{{}} answer in the solution of {pid}")
    level = re.fullmatch(r"Level (\d+)", row["level"] or "")  # a few upstream rows say "Level ?"
    return Problem(
        id=pid,
        question=row["problem"],
        answer=answer,
        steps=_with_answer(_prose_steps(row["solution"]), answer),
        level=int(level[1]) if level else None,
        source="math",
        meta={"subject": row["type"]},
    )


def _math500(row: dict, pid: str) -> Problem:
    return Problem(
        id=row["unique_id"],
        question=row["problem"],
        answer=row["answer"],
        steps=_with_answer(_prose_steps(row["solution"]), row["answer"]),
        level=int(row["level"]),
        source="math500",
        meta={"subject": row["subject"]},
    )


def _gsm8k(row: dict, pid: str) -> Problem:
    reasoning, sep, answer = row["answer"].rpartition("####")
    if not sep:
        raise ValueError(f"gsm8k: no '#### <answer>' line in {pid}")
    answer = answer.strip()
    steps = _line_steps(_CALCULATOR.sub("", reasoning))
    return Problem(
        id=pid,
        question=row["question"],
        answer=answer,
        steps=_with_answer(steps, answer),
        source="gsm8k",
    )


def _metamathqa(row: dict, pid: str) -> Problem:
    reasoning, sep, answer = row["response"].rpartition(_ANSWER)
    if not sep:
        raise ValueError(f"metamathqa: no {_ANSWER!r} in the response of {pid}")
    answer = answer.strip()
    # GSM-derived responses use `$` for money and keep GSM8K's `#### X` line before the phrase.
    if row["type"].startswith("GSM"):
        steps = [s for s in _line_steps(reasoning) if not s.startswith("####")]
    else:
        steps = _prose_steps(reasoning)
    return Problem(
        id=pid,
        question=row["query"],
        answer=answer,
        steps=_with_answer(steps, answer),
        source="metamathqa",
        meta={"type": row["type"], "original_question": row["original_question"]},
    )


def _math_shepherd(row: dict, pid: str) -> Problem | None:
    """Only solutions labelled correct at every step: their stated answer is the reference."""
    question, steps, labels = _parse_shepherd(row["input"], row["label"], pid)
    _, sep, answer = steps[-1].rpartition(_ANSWER) if steps else ("", "", "")
    if not (sep and all(labels)):
        return None
    return Problem(
        id=pid,
        question=question,
        answer=answer.strip(),
        steps=steps,
        source="math_shepherd",
        meta={"task": row["task"]},
    )


ADAPTERS: dict[str, Adapter] = {
    "math": Adapter(("problem", "level", "type", "solution"), _math),
    "math500": Adapter(
        ("problem", "solution", "answer", "subject", "level", "unique_id"), _math500
    ),
    "gsm8k": Adapter(("question", "answer"), _gsm8k, subset="main"),
    "metamathqa": Adapter(("query", "response", "type", "original_question"), _metamathqa),
    "math_shepherd": Adapter(("input", "label", "task"), _math_shepherd),
}


def _parse_shepherd(text: str, label: str, where: object) -> tuple[str, list[str], list[bool]]:
    """Question, steps and labels of one Math-Shepherd row.

    `label` is `text` with each two-character tag replaced by one `+`/`-`, so the k-th tag's mark
    sits k characters before the tag's own position.
    """
    tags = [m.start() for m in re.finditer(_SHEPHERD_TAG, text)]
    marks = [label[pos - k : pos - k + 1] for k, pos in enumerate(tags)]
    if not tags or any(m not in ("+", "-") for m in marks):
        raise ValueError(f"math_shepherd: row {where}: label does not mark the input's step tags")
    first = _FIRST_STEP.search(text)
    if first:
        start = first.start()
    elif "?" in text[: tags[0]]:  # a few rows start the first step without `Step 1:`
        start = text.rindex("?", 0, tags[0]) + 1
    else:
        raise ValueError(f"math_shepherd: row {where}: cannot find where the first step starts")
    # Tags before the first step are annotation slips inside the question: dropped with their marks.
    skipped = sum(pos < start for pos in tags)
    question = " ".join(text[:start].replace(_SHEPHERD_TAG, "").split())
    pieces = text[start:].split(_SHEPHERD_TAG)[:-1]  # the last piece follows the last tag
    steps = [_one_line(_STEP_PREFIX.sub("", _CALCULATOR.sub("", p).strip())) for p in pieces]
    return question, steps, [m == "+" for m in marks[skipped:]]


def _line_steps(text: str) -> list[str]:
    return [_one_line(line) for line in text.splitlines() if line.strip()]


def _prose_steps(text: str) -> list[str]:
    """LaTeX prose split at line breaks and sentence ends, never inside math or figures.

    A piece starting in lowercase or with math continues its sentence (`We get \\[x=2,\\]so ...`)
    and joins the previous step.
    """
    masked = _MATH_SPAN.sub(_mask, text)  # same length as text, math hidden from the break rules
    bounds = [0, *(i for m in _BREAK.finditer(masked) for i in m.span()), len(text)]
    steps: list[str] = []
    for begin, end in zip(bounds[::2], bounds[1::2], strict=True):
        piece = _one_line(text[begin:end])
        if piece and steps and masked[begin].islower():
            steps[-1] = f"{steps[-1]} {piece}"
        elif piece:
            steps.append(piece)
    return steps


def _mask(span: re.Match) -> str:
    # A sentence end inside the math (`... = 3.$  Also, ...`) still ends the sentence.
    end = "." if _SENTENCE_END_IN_MATH.search(span[0]) else "x"
    return "x" * (len(span[0]) - 1) + end


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _with_answer(steps: list[str], answer: str) -> list[str]:
    """The steps with the last one stating the answer in the project's step format."""
    if not steps:
        return [_FORMAT.answer_text(answer)]
    return [*steps[:-1], f"{steps[-1]} {_FORMAT.answer_text(answer)}"]
