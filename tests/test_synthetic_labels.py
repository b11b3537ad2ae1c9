"""Exact step labels of the synthetic task in Math-Shepherd's upstream format."""

from __future__ import annotations

from inferscale.data.adapters import load_step_labels
from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import apply_operation, make_splits
from inferscale.data.synthetic_labels import labelled_rows, write_rows


def on_the_right_path(question: str, steps: list[str], modulus: int, gold: list[str]) -> list[bool]:
    """Each step's truth recomputed: its arithmetic holds and its value is the right solution's
    value at that step (an answer step: the answer is the gold one)."""
    out = []
    for i, step in enumerate(steps):
        if step.startswith("The answer is:"):
            out.append(step == gold[-1])
            continue
        left, op, right, _, result = step.split()
        # `+` is the only operation written swapped, and it commutes.
        holds = apply_operation(int(left), op, int(right), modulus) == int(result)
        out.append(holds and result == gold[i].split()[-1])
    return out


def test_the_labels_say_which_steps_are_right(tmp_path):
    train, _ = make_splits(
        200, 10, [1, 2, 3, 4], 37, 0, "The answer is:", 0.5, ("+", "-"), any_order=True
    )
    rows = labelled_rows(train[:60], StepFormat(), seed=3)
    assert len(rows) == 120
    solutions = load_step_labels(str(write_rows(tmp_path / "heldout.jsonl", rows)), "train", None)
    by_question = {p.question: p for p in train[:60]}
    wrong = 0
    for s in solutions:
        problem = by_question[s.question]
        assert s.labels == on_the_right_path(s.question, s.steps, 37, problem.steps)
        # Once wrong, a step never returns to the right path.
        assert s.labels == sorted(s.labels, reverse=True)
        wrong += not s.labels[-1]
    assert wrong == 60
