"""A synthetic multi-step arithmetic task with difficulty levels (the default experiment's data).

A problem starts at a number in 0..M-1 and applies `level` operations `+ - *` by a digit 1-9,
modulo M, left to right; its solution has one step per operation and a last step stating the
answer. A step of a commutative operation is written with its operands in either order
(`swap_rate`), so one answer has many reasoning paths, whose errors differ: the property that
lets voting over samples beat the single most likely path (Wu et al., Theorems 1-2).

Numbers are single tokens of the task's tokenizer, which keeps sequences short enough for tiny
models to learn on a CPU in minutes.
"""

from __future__ import annotations

import random

from inferscale.data.records import Problem

OPERATIONS = ("+", "-", "*")


def apply_operation(value: int, op: str, operand: int, modulus: int) -> int:
    if op == "+":
        return (value + operand) % modulus
    if op == "-":
        return (value - operand) % modulus
    if op == "*":
        return (value * operand) % modulus
    raise ValueError(f"unknown operation {op!r}")


COMMUTATIVE = ("+", "*")


def make_problem(
    rng: random.Random,
    level: int,
    modulus: int,
    answer_phrase: str,
    pid: str,
    swap_rate: float = 0.0,
) -> Problem:
    value = rng.randrange(modulus)
    question = [str(value)]
    steps = []
    for _ in range(level):
        op, operand = rng.choice(OPERATIONS), rng.randint(1, 9)
        result = apply_operation(value, op, operand, modulus)
        question += [op, str(operand)]
        left, right = value, operand
        # Drawn for every commutative step, so the questions do not depend on swap_rate.
        if op in COMMUTATIVE and rng.random() < swap_rate:
            left, right = operand, value
        steps.append(f"{left} {op} {right} = {result}")
        value = result
    steps.append(f"{answer_phrase} {value}")
    return Problem(
        id=pid,
        question=" ".join(question),
        answer=str(value),
        steps=steps,
        level=level,
        source="arithmetic",
        meta={"modulus": modulus},
    )


def question_space(level: int, modulus: int) -> int:
    """How many distinct questions a level has."""
    return modulus * (len(OPERATIONS) * 9) ** level


def make_split(
    split: str,
    size: int,
    levels: list[int],
    modulus: int,
    seed: int,
    answer_phrase: str,
    exclude: frozenset[str] = frozenset(),
    distinct: bool = False,
    swap_rate: float = 0.0,
) -> list[Problem]:
    """`size` problems with levels cycling through `levels`, deterministic by (seed, split).

    Questions in `exclude` are drawn again; with `distinct`, repeats within the split too.
    """
    rng = random.Random(f"{seed}-{split}")
    problems: list[Problem] = []
    seen = set(exclude)
    while len(problems) < size:
        level = levels[len(problems) % len(levels)]
        p = make_problem(rng, level, modulus, answer_phrase, f"{split}-{len(problems)}", swap_rate)
        if p.question in seen:
            continue
        if distinct:
            seen.add(p.question)
        problems.append(p)
    return problems


def make_splits(
    train_size: int,
    test_size: int,
    levels: list[int],
    modulus: int,
    seed: int,
    answer_phrase: str,
    swap_rate: float = 0.0,
) -> tuple[list[Problem], list[Problem]]:
    """Distinct test questions first, then training problems that never ask a test question."""
    for level in set(levels):
        wanted = -(-test_size * levels.count(level) // len(levels))
        if wanted > question_space(level, modulus) // 2:
            raise ValueError(
                f"level {level} with modulus {modulus} has only {question_space(level, modulus)} "
                f"distinct questions, too few for {wanted} test questions and a training set; "
                "lower test_size or raise the modulus"
            )
    test = make_split(
        "test", test_size, levels, modulus, seed, answer_phrase, distinct=True, swap_rate=swap_rate
    )
    exclude = frozenset(p.question for p in test)
    train = make_split(
        "train", train_size, levels, modulus, seed, answer_phrase, exclude, swap_rate=swap_rate
    )
    return train, test
