"""Exact step validity for the synthetic arithmetic task: the truth a PRM should predict.

A question (`"24 - 9 + 7"`) is a start value, then operations `op operand` (op in `+ - *`),
modulo M. Steps are step bodies as a PRM reads them (no `Step k:` prefix, no tag): computing
steps `x op y = r`, then the answer step `<answer phrase> <value>`.

Definition. Walk the solution from the start value, carrying two values: the value carried (the
previous step's written result, or the start) and the true value (the start with the
operations the solution applied so far, computed right). A computing step is valid when

- it parses as `x op y = r` with integers x, y, r and op in `+ - *`;
- it states the value carried as its first operand (or, for `+` and `*`, either operand: a
  swapped step `7 + 24 = 31`), the other operand being the step's operand;
- (op, operand) is an operation of the question not used before: the question's operations are
  a multiset (one question may hold the same operation twice), each step consumes one; if the
  question's operations do not commute (`operations_commute`), it must be the next unused one
  in the question's order;
- its written arithmetic is right: r == carried op operand (mod M, r in 0..M-1);
- r is the true value after this step.

The answer step is valid when every operation has been applied and it states the question's
answer (an integer after the answer phrase). Anything unparsable, an answer before every
operation is applied, a computing step once all are applied, and any step after an answer step
is invalid. Each step is judged on its own terms (`step_validity`); a *prefix* of a solution is
valid when all its steps are (`prefix_validity`): what a PRM should predict for the step ending
it, and what the oracle scores. After a step that applies no operation of the question (or an
unparsable one), the true value still follows what the step applied, where it can be read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from inferscale.data.step_labels import StepLabelled
from inferscale.data.synthetic import COMMUTATIVE, OPERATIONS, apply_operation, operations_commute

_COMPUTING_STEP = re.compile(r"^\s*(\d+)\s*([-+*])\s*(\d+)\s*=\s*(\d+)\s*$")
_INTEGER = re.compile(r"^\s*(\d+)\s*$")

Operation = tuple[str, int]


def parse_question(question: str) -> tuple[int, list[Operation]]:
    """The start value and the (op, operand) operations of a synthetic question, in order."""
    tokens = question.split()
    well_formed = (
        len(tokens) % 2 == 1
        and all(t.isdigit() for t in tokens[::2])
        and all(t in OPERATIONS for t in tokens[1::2])
    )
    if not well_formed:
        raise ValueError(
            f"not a synthetic arithmetic question: {question!r} (expected a start number, then "
            "`op operand` pairs with op in + - *); exact validity exists for that task only"
        )
    pairs = zip(tokens[1::2], tokens[2::2], strict=True)
    operations = [(op, int(operand)) for op, operand in pairs]
    return int(tokens[0]), operations


def step_validity(
    question: str, steps: Sequence[str], modulus: int, answer_phrase: str
) -> list[bool]:
    """Whether each step is valid on its own terms (see the module's definition)."""
    start, operations = _checked_question(question, modulus)
    answer = start
    for op, operand in operations:
        answer = apply_operation(answer, op, operand, modulus)
    in_order = not operations_commute(tuple(op for op, _ in operations))
    remaining = list(operations)
    carried = true_value = start
    answered = False
    valid = []
    for step in steps:
        if answered:
            valid.append(False)
            continue
        text = step.strip()
        if text.startswith(answer_phrase):
            answered = True
            stated = _INTEGER.match(text[len(answer_phrase) :])
            valid.append(not remaining and stated is not None and int(stated[1]) == answer)
            continue
        parsed = _COMPUTING_STEP.match(text)
        if parsed is None:
            valid.append(False)
            continue
        left, op, right, result = int(parsed[1]), parsed[2], int(parsed[3]), int(parsed[4])
        states_carried = left == carried or (op in COMMUTATIVE and right == carried)
        # The swapped reading only when the plain one does not state the value carried.
        operand = left if left != carried and op in COMMUTATIVE and right == carried else right
        available = (op, operand) in (remaining[:1] if in_order else remaining)
        if (op, operand) in remaining:
            remaining.remove((op, operand))
        arithmetic_right = result == apply_operation(carried, op, operand, modulus)
        true_value = apply_operation(true_value, op, operand, modulus)
        valid.append(states_carried and available and arithmetic_right and result == true_value)
        carried = result
    return valid


def prefix_validity(
    question: str, steps: Sequence[str], modulus: int, answer_phrase: str
) -> list[bool]:
    """Whether each prefix (steps 1..k) is valid: all its steps are."""
    out, so_far = [], True
    for valid in step_validity(question, steps, modulus, answer_phrase):
        so_far = so_far and valid
        out.append(so_far)
    return out


def exact_labels(
    records: Sequence[StepLabelled], modulus: int, answer_phrase: str
) -> list[StepLabelled]:
    """The same solutions labelled by prefix validity instead of rollouts (soft labels 1.0 or
    0.0); the final answer's correctness and the answer stay as they were."""
    out = []
    for r in records:
        hard = prefix_validity(r.question, r.steps, modulus, answer_phrase)
        soft = [1.0 if h else 0.0 for h in hard]
        out.append(dataclasses.replace(r, hard_labels=hard, soft_labels=soft))
    return out


def label_agreement(labels: Sequence[Sequence[bool]], exact: Sequence[Sequence[bool]]) -> dict:
    """How often step labels (made by rollouts) agree with exact prefix validity, step by
    step: `steps`, `agree`, `rate` (None without steps), `rollout_good_exact_bad` and
    `rollout_bad_exact_good`."""
    steps = agree = good_bad = bad_good = 0
    for solution_labels, solution_exact in zip(labels, exact, strict=True):
        for rollout, truth in zip(solution_labels, solution_exact, strict=True):
            steps += 1
            agree += rollout == truth
            good_bad += rollout and not truth
            bad_good += truth and not rollout
    return {
        "steps": steps,
        "agree": agree,
        "rate": agree / steps if steps else None,
        "rollout_good_exact_bad": good_bad,
        "rollout_bad_exact_good": bad_good,
    }


def validity_of(modulus: int, answer_phrase: str):
    """`prefix_validity` of the task with this modulus and answer phrase, as a function of a
    question and its steps."""
    check_modulus(modulus)
    return lambda question, steps: prefix_validity(question, steps, modulus, answer_phrase)


def check_modulus(modulus: int) -> None:
    if isinstance(modulus, bool) or not isinstance(modulus, int) or modulus < 2:
        raise ValueError(f"modulus must be an integer of at least 2, got {modulus!r}")


def _checked_question(question: str, modulus: int) -> tuple[int, list[Operation]]:
    check_modulus(modulus)
    start, operations = parse_question(question)
    if start >= modulus:
        raise ValueError(
            f"question {question!r} starts at {start}, not below the modulus {modulus}: give "
            "the modulus of the task that made it"
        )
    return start, operations
