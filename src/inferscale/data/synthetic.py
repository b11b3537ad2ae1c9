"""A synthetic multi-step arithmetic task with difficulty levels (the default experiment's data).

A problem starts at a number in 0..M-1 and applies `level` operations `+ - *` by a digit 1-9,
modulo M, left to right; its solution has one step per operation and a last step stating the
answer. Numbers are single tokens of the task's tokenizer, which keeps sequences short enough for
tiny models to learn on a CPU in minutes.
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


def make_problem(rng: random.Random, level: int, modulus: int, answer_phrase: str, pid: str) -> Problem:
    value = rng.randrange(modulus)
    question = [str(value)]
    steps = []
    for _ in range(level):
        op, operand = rng.choice(OPERATIONS), rng.randint(1, 9)
        result = apply_operation(value, op, operand, modulus)
        question += [op, str(operand)]
        steps.append(f"{value} {op} {operand} = {result}")
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


def make_split(
    split: str, size: int, levels: list[int], modulus: int, seed: int, answer_phrase: str
) -> list[Problem]:
    """`size` problems with levels cycling through `levels`, deterministic by (seed, split)."""
    rng = random.Random(f"{seed}-{split}")
    return [
        make_problem(rng, levels[i % len(levels)], modulus, answer_phrase, f"{split}-{i}")
        for i in range(size)
    ]


def make_splits(
    train_size: int, test_size: int, levels: list[int], modulus: int, seed: int, answer_phrase: str
) -> tuple[list[Problem], list[Problem]]:
    """Train and test splits; test questions that also occur in train are replaced."""
    train = make_split("train", train_size, levels, modulus, seed, answer_phrase)
    seen = {p.question for p in train}
    rng = random.Random(f"{seed}-test")
    test = []
    while len(test) < test_size:
        level = levels[len(test) % len(levels)]
        p = make_problem(rng, level, modulus, answer_phrase, f"test-{len(test)}")
        if p.question not in seen:
            seen.add(p.question)
            test.append(p)
    return train, test
