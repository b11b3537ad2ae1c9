"""A synthetic multi-step arithmetic task with difficulty levels (the default experiment's data).

A problem starts at a number in 0..M-1 and applies `level` operations (from `+ - *`) by a digit
1-9, modulo M; its solution has one step per operation and a last step stating the answer.
Left to right by default; with `any_order` (operations that commute, such as `+` and `-`) each
solution applies them in a random order, so one answer has many reasoning paths through
different intermediate values, whose errors differ: the property that lets voting over samples
beat the single most likely path (Wu et al., Theorems 1-2). A step of a commutative operation
may also be written with its operands swapped (`swap_rate`).

Numbers are single tokens of the task's tokenizer, which keeps sequences short enough for tiny
models to learn on a CPU in minutes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple

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


def operations_commute(operations: tuple[str, ...]) -> bool:
    """Whether applying these operations in any order gives the same result (modulo M)."""
    return set(operations) <= {"+", "-"} or set(operations) == {"*"}


def make_problem(
    rng: random.Random,
    level: int,
    modulus: int,
    answer_phrase: str,
    pid: str,
    swap_rate: float = 0.0,
    operations: tuple[str, ...] = OPERATIONS,
    any_order: bool = False,
) -> Problem:
    if any_order and not operations_commute(operations):
        raise ValueError(
            f"operations {operations} do not commute, so any_order would change answers"
        )
    start = rng.randrange(modulus)
    question = [str(start)]
    drawn = []
    for _ in range(level):
        op, operand = rng.choice(operations), rng.randint(1, 9)
        question += [op, str(operand)]
        # Drawn for every commutative step, so the questions do not depend on swap_rate.
        swap = op in COMMUTATIVE and rng.random() < swap_rate
        drawn.append((op, operand, swap))
    # Drawn for every problem, so the questions do not depend on any_order either.
    order_seed = rng.getrandbits(32)
    if any_order:
        drawn = random.Random(order_seed).sample(drawn, len(drawn))
    value, steps = start, []
    for op, operand, swap in drawn:
        result = apply_operation(value, op, operand, modulus)
        left, right = (operand, value) if swap else (value, operand)
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


def question_space(level: int, modulus: int, operations: tuple[str, ...] = OPERATIONS) -> int:
    """How many distinct questions a level has."""
    return modulus * (len(set(operations)) * 9) ** level


def too_few_questions(
    test_size: int, levels: list[int], modulus: int, operations: tuple[str, ...] = OPERATIONS
) -> str | None:
    """Why a level cannot give `test_size`'s share of distinct test questions and still leave
    questions to train on; None when every level can."""
    for level in sorted(set(levels)):
        wanted = -(-test_size * levels.count(level) // len(levels))
        space = question_space(level, modulus, operations)
        if wanted > space // 2:
            return (
                f"level {level} with modulus {modulus} has only {space} distinct questions, too "
                f"few for {wanted} test questions and a training set; lower test_size or raise "
                "the modulus"
            )
    return None


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
    operations: tuple[str, ...] = OPERATIONS,
    any_order: bool = False,
) -> list[Problem]:
    """`size` problems with levels cycling through `levels`, deterministic by (seed, split).

    Questions in `exclude` are drawn again; with `distinct`, repeats within the split too.
    """
    rng = random.Random(f"{seed}-{split}")
    problems: list[Problem] = []
    seen = set(exclude)
    while len(problems) < size:
        level = levels[len(problems) % len(levels)]
        pid = f"{split}-{len(problems)}"
        p = make_problem(rng, level, modulus, answer_phrase, pid, swap_rate, operations, any_order)
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
    operations: tuple[str, ...] = OPERATIONS,
    any_order: bool = False,
) -> tuple[list[Problem], list[Problem]]:
    """Distinct test questions first, then training problems that never ask a test question."""
    problem = too_few_questions(test_size, levels, modulus, operations)
    if problem:
        raise ValueError(problem)
    task = {"swap_rate": swap_rate, "operations": operations, "any_order": any_order}
    test = make_split(
        "test", test_size, levels, modulus, seed, answer_phrase, distinct=True, **task
    )
    exclude = frozenset(p.question for p in test)
    train = make_split("train", train_size, levels, modulus, seed, answer_phrase, exclude, **task)
    return train, test


def count_tokens(text: str) -> int:
    """How many tokens the task's tokenizer (models/tokenizer.py) makes of `text`, BOS included:
    one per piece of its pre-tokenizer, whatever the vocabulary (an unknown piece is one token)."""
    from tokenizers import Regex, pre_tokenizers

    from inferscale.models.tokenizer import SPLIT_PATTERN

    split = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")
    return 1 + len(split.pre_tokenize_str(text))


class PromptLengths(NamedTuple):
    """Token counts of the task's longest prompt, of its longest prompt and first step (up to
    its tag) together, and of its longest training example (prompt, solution and EOS)."""

    prompt: int
    first_step: int
    example: int


def longest_prompts(
    levels: list[int],
    modulus: int,
    operations: tuple[str, ...],
    prompt: Callable[[str], str],
    first_step: Callable[[str], str],
    solution: Callable[[list[str]], str],
    answer_phrase: str,
) -> PromptLengths:
    """The task's longest prompts and examples in tokens.

    Numbers are single tokens, so all problems of a level have one length: a few problems of
    each level measure it.
    """
    rng = random.Random(0)
    lengths = PromptLengths(0, 0, 0)
    for level in sorted(set(levels)):
        for _ in range(4):
            p = make_problem(rng, level, modulus, answer_phrase, "", operations=operations)
            text = prompt(p.question)
            measured = PromptLengths(
                count_tokens(text),
                count_tokens(text + first_step(p.steps[0])),
                count_tokens(text) + count_tokens(solution(p.steps)),  # its BOS stands for EOS
            )
            lengths = PromptLengths(*map(max, lengths, measured))
    return lengths
