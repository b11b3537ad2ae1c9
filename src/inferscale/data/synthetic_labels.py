"""Step-labelled solutions of the synthetic task whose labels are exact by construction, written
as an upstream Math-Shepherd file (`input` with the step tag after each step, `label` with `+`
or `-` in its place), so that a PRM can be measured on them as on Math-Shepherd's own.

For each question: its right solution, every step `+`; and a wrong one, whose step k states a
wrong result and whose later steps compute on from it. With a prime modulus every operation is
a bijection, so no later step can return to the right path: steps before k are `+`, step k and
every one after it `-`, the last stating a wrong answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import apply_operation

GOOD, BAD = "+", "-"


def _operations(problem: Problem) -> list[tuple[str, int]]:
    """(operation, operand) of each computing step, in the solution's order."""
    out = []
    value = int(problem.question.split()[0])
    for step in problem.steps[:-1]:
        left, op, right, _, result = step.split()
        # A swapped step writes the operand first, the value carried second.
        operand = int(right) if int(left) == value else int(left)
        out.append((op, operand))
        value = int(result)
    return out


def corrupted(problem: Problem, k: int, rng: random.Random, fmt: StepFormat) -> list[str]:
    """The solution's steps with step k (0-based) stating a wrong result, computed on from it."""
    modulus = problem.meta["modulus"]
    ops = _operations(problem)
    steps = list(problem.steps[:k])
    value = int(problem.steps[k - 1].split()[-1]) if k else int(problem.question.split()[0])
    for i, (op, operand) in enumerate(ops[k:], start=k):
        right = apply_operation(value, op, operand, modulus)
        result = right
        if i == k:
            result = rng.choice([v for v in range(modulus) if v != right])
        steps.append(f"{value} {op} {operand} = {result}")
        value = result
    steps.append(fmt.answer_text(str(value)))
    return steps


def math_shepherd_row(question: str, steps: Sequence[str], labels: Sequence[bool]) -> dict:
    """One upstream row: the question, then each step with the tag, or its label, after it."""
    fmt = StepFormat(tag=" ки")
    tagged = fmt.solution(list(steps)).rstrip("\n")
    marks = iter(GOOD if good else BAD for good in labels)
    labelled = "".join(
        part + (f" {next(marks)}" if i < len(steps) else "")
        for i, part in enumerate(tagged.split(" ки"))
    )
    return {"input": f"{question} {tagged}", "label": f"{question} {labelled}", "task": "synthetic"}


def labelled_rows(problems: Sequence[Problem], fmt: StepFormat, seed: int = 0) -> list[dict]:
    """A right and a wrong solution of each problem (steps that only compute), as upstream rows."""
    rng = random.Random(seed)
    rows = []
    for problem in problems:
        computing = len(problem.steps) - 1
        if computing < 1:
            continue
        rows.append(math_shepherd_row(problem.question, problem.steps, [True] * len(problem.steps)))
        k = rng.randrange(computing)
        wrong = corrupted(problem, k, rng, fmt)
        rows.append(math_shepherd_row(problem.question, wrong, [i < k for i in range(len(wrong))]))
    return rows


def write_rows(path: str | Path, rows: Sequence[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path
