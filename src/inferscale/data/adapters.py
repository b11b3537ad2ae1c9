"""Adapters mapping upstream math datasets to `Problem` records.

Each source is read from a hub id (with `datasets`) or a local json/jsonl/parquet/csv file (by
`data.files`, which names the line of a bad row). Worked solutions become steps in the project's
step format: one line of text each, the last one ending with the answer phrase
(`... The answer is: X`), as in Math-Shepherd. A row that cannot be converted is refused naming
its file and line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from inferscale.data.files import DatasetFileError, Row, is_local_file, read_rows
from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.grading import last_boxed

# Math-Shepherd's format is the project's default, so its answer phrase also parses upstream text.
_FORMAT = StepFormat()
_ANSWER = _FORMAT.answer_phrase
_SHEPHERD_TAG = "ки"

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
    numbers: tuple[str, ...] = ()  # columns that may hold numbers; the others hold text


def load_problems(
    source: str,
    path_or_id: str,
    split: str = "test",
    limit: int | None = None,
    subset: str | None = None,
) -> list[Problem]:
    """Problems of `source` (a key of ADAPTERS) from a hub id or a local file.

    Ids are the upstream id where there is one, else `{source}-{split}-{row index}`. A file
    whose rows all convert to nothing (Math-Shepherd rows with a wrong step) is refused.
    """
    if source not in ADAPTERS:
        raise ValueError(f"unknown source {source!r}; known sources: {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[source]
    if limit == 0:
        return []
    problems = []
    rows = _rows(adapter.columns, path_or_id, split, subset or adapter.subset)
    for i, (where, row) in enumerate(rows):
        _check_types(where, row, adapter)
        problem = _converted(where, source, adapter.convert, row, f"{source}-{split}-{i}")
        if problem is not None:
            problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise DatasetFileError(
            f"{path_or_id}: no usable {source} problem in its rows (Math-Shepherd rows count "
            "only when every step is labelled '+'); give a file with at least one"
        )
    return problems


def load_step_labels(
    path_or_id: str, split: str = "train", limit: int | None = None
) -> list[LabelledSolution]:
    """Math-Shepherd solutions with their per-step correctness labels (`+` is True)."""
    out = []
    for where, row in _rows(("input", "label"), path_or_id, split, None):
        if limit is not None and len(out) >= limit:
            break
        _check_types(where, row, Adapter(("input", "label"), _math_shepherd))
        solution = _converted(where, "math_shepherd", _parse_shepherd, row["input"], row["label"])
        out.append(LabelledSolution(*solution))
    return out


def _rows(
    columns: tuple[str, ...], path_or_id: str, split: str, subset: str | None
) -> Iterator[Row]:
    """(where, row) pairs: `path:line` of a local file, `hub id (split) row k` of a hub set."""
    if is_local_file(path_or_id):
        yield from read_rows(path_or_id, columns)
        return
    import datasets

    ds = datasets.load_dataset(path_or_id, subset, split=split)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DatasetFileError(
            f"{path_or_id} ({split}): no column(s) {', '.join(map(repr, missing))} "
            f"(columns found: {', '.join(ds.column_names)}); name a split or subset that has them"
        )
    for i, row in enumerate(ds):
        yield f"{path_or_id} ({split}) row {i}", row


def _check_types(where: str, row: dict, adapter: Adapter) -> None:
    for column in adapter.columns:
        value = row[column]
        if isinstance(value, str) or (column in adapter.numbers and type(value) is int):
            continue
        expected = "text or a number" if column in adapter.numbers else "text"
        raise DatasetFileError(
            f"{where}: column {column!r} holds {type(value).__name__} {value!r:.40}; it must "
            f"hold {expected}"
        )


def _converted(where: str, source: str, convert: Callable, *args):
    try:
        return convert(*args)
    except (ValueError, KeyError, IndexError) as err:
        raise DatasetFileError(
            f"{where}: not a {source} row: {err}; fix the row or remove it"
        ) from None


def _math(row: dict, pid: str) -> Problem:
    answer = last_boxed(row["solution"])
    if answer is None:
        raise ValueError("no \\boxed{} answer in its solution")
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
        raise ValueError("no '#### <answer>' line in its answer")
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
        raise ValueError(f"no {_ANSWER!r} in its response")
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
    question, steps, labels = _parse_shepherd(row["input"], row["label"])
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
        ("problem", "solution", "answer", "subject", "level", "unique_id"),
        _math500,
        numbers=("level",),
    ),
    "gsm8k": Adapter(("question", "answer"), _gsm8k, subset="main"),
    "metamathqa": Adapter(("query", "response", "type", "original_question"), _metamathqa),
    "math_shepherd": Adapter(("input", "label", "task"), _math_shepherd),
}


def _parse_shepherd(text: str, label: str) -> tuple[str, list[str], list[bool]]:
    """Question, steps and labels of one Math-Shepherd row.

    `label` is `text` with each two-character tag replaced by one `+`/`-`, so the k-th tag's mark
    sits k characters before the tag's own position.
    """
    tags = [m.start() for m in re.finditer(_SHEPHERD_TAG, text)]
    marks = [label[pos - k : pos - k + 1] for k, pos in enumerate(tags)]
    if not tags or any(m not in ("+", "-") for m in marks):
        raise ValueError("its label does not mark the input's step tags")
    first = _FIRST_STEP.search(text)
    if first:
        start = first.start()
    elif "?" in text[: tags[0]]:  # a few rows start the first step without `Step 1:`
        start = text.rindex("?", 0, tags[0]) + 1
    else:
        raise ValueError("cannot find where its first step starts")
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
