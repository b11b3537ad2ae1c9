"""Exact step validity of synthetic solutions, on hand-written solutions and generated ones."""

import random

import pytest

from inferscale.data.step_labels import StepLabelled
from inferscale.data.step_validity import (
    exact_labels,
    label_agreement,
    parse_question,
    prefix_validity,
    step_validity,
    validity_of,
)
from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import make_splits
from inferscale.data.synthetic_labels import corrupted

PHRASE = "The answer is:"
M = 37
# 24 - 9 = 15, 15 + 7 = 22, 22 + 3 = 25 (mod 37); + and - commute, so any order is right.
Q = "24 - 9 + 7 + 3"


def both(steps, question=Q, modulus=M, phrase=PHRASE):
    return (
        step_validity(question, steps, modulus, phrase),
        prefix_validity(question, steps, modulus, phrase),
    )


def test_parse_question():
    assert parse_question("24 - 9 + 7") == (24, [("-", 9), ("+", 7)])
    assert parse_question("5") == (5, [])
    for bad in ("", "24 -", "24 / 9", "a + 1", "24 + 9 7", "What is 2 + 2?"):
        with pytest.raises(ValueError, match="not a synthetic arithmetic question"):
            parse_question(bad)


def test_the_modulus_must_fit_the_question():
    with pytest.raises(ValueError, match="starts at 24, not below the modulus 20"):
        step_validity(Q, ["24 - 9 = 15"], 20, PHRASE)
    with pytest.raises(ValueError, match="modulus must be an integer"):
        step_validity(Q, ["24 - 9 = 15"], 1, PHRASE)


def test_a_right_solution():
    steps = ["24 - 9 = 15", "15 + 7 = 22", "22 + 3 = 25", "The answer is: 25"]
    assert both(steps) == ([True] * 4, [True] * 4)


def test_a_slip_and_everything_after_it():
    # Step 2 states 23; steps 3 and 4 compute on from it right, but their values are wrong.
    steps = ["24 - 9 = 15", "15 + 7 = 23", "23 + 3 = 26", "The answer is: 26"]
    assert both(steps) == ([True, False, False, False], [True, False, False, False])


def test_a_reused_operation():
    # -9 twice; the next two steps are right on their own terms (their operations are unused
    # and their values follow from what was applied), the answer is not the question's.
    steps = ["24 - 9 = 15", "15 - 9 = 6", "6 + 7 = 13", "13 + 3 = 16", "The answer is: 16"]
    assert both(steps) == ([True, False, True, True, False], [True] + [False] * 4)


def test_an_operand_not_in_the_question():
    steps = ["24 - 9 = 15", "15 + 5 = 20", "20 + 7 = 27", "27 + 3 = 30", "The answer is: 30"]
    assert both(steps)[1] == [True, False, False, False, False]
    assert both(steps)[0][1] is False
    # An operation of the question with another op: 7 is there, but as + 7, not - 7.
    assert both(["24 - 7 = 17"]) == ([False], [False])


def test_a_right_path_in_an_unusual_order():
    steps = ["24 + 3 = 27", "27 + 7 = 34", "34 - 9 = 25", "The answer is: 25"]
    assert both(steps) == ([True] * 4, [True] * 4)


def test_swapped_operands_of_a_sum_but_not_of_a_difference():
    steps = ["7 + 24 = 31", "31 - 9 = 22", "3 + 22 = 25", "The answer is: 25"]
    assert both(steps) == ([True] * 4, [True] * 4)
    # 9 - 24 = -15 = 22 (mod 37) is the right number, but a difference cannot be swapped.
    assert both(["9 - 24 = 22"]) == ([False], [False])
    # Neither operand is the value carried.
    assert both(["24 - 9 = 15", "14 + 7 = 21"]) == ([True, False], [True, False])


def test_two_slips_that_cancel():
    # 24 - 9 is 15, not 16; 16 + 7 is 23, not 22, which happens to be the true value: the second
    # step's written arithmetic is wrong, so it is invalid too, and the prefix is invalid from
    # the first slip although the final answer is right.
    steps = ["24 - 9 = 16", "16 + 7 = 22", "22 + 3 = 25", "The answer is: 25"]
    assert both(steps) == ([False, False, True, True], [False] * 4)


def test_a_premature_answer_and_a_step_after_the_answer():
    assert both(["24 - 9 = 15", "The answer is: 15"]) == ([True, False], [True, False])
    steps = ["24 - 9 = 15", "15 + 7 = 22", "22 + 3 = 25", "The answer is: 25", "25 + 1 = 26"]
    assert both(steps) == ([True] * 4 + [False], [True] * 4 + [False])
    # Two answers: the second is invalid even when it repeats the right one.
    assert both(["5 + 1 = 6", "The answer is: 6", "The answer is: 6"], "5 + 1") == (
        [True, True, False],
        [True, True, False],
    )


def test_an_extra_computing_step_after_every_operation():
    steps = ["24 - 9 = 15", "15 + 7 = 22", "22 + 3 = 25", "25 + 3 = 28", "The answer is: 28"]
    assert both(steps) == ([True, True, True, False, False], [True, True, True, False, False])


def test_a_wrong_final_answer():
    steps = ["24 - 9 = 15", "15 + 7 = 22", "22 + 3 = 25", "The answer is: 24"]
    assert both(steps) == ([True, True, True, False], [True, True, True, False])


def test_unparsable_steps():
    for bad in ("15 + 7 is 22", "15 + 7 = twenty", "15 + 7 = 22 = 22", "", "15 ++ 7 = 22"):
        assert both(["24 - 9 = 15", bad]) == ([True, False], [True, False]), bad
    # An answer that is not a number, or a number followed by more text.
    tail = ["24 - 9 = 15", "15 + 7 = 22", "22 + 3 = 25"]
    assert both([*tail, "The answer is: twenty-five"])[0][-1] is False
    assert both([*tail, "The answer is: 25 or 26"])[0][-1] is False
    # Spacing is free, as a tokenizer's decoding may join pieces differently.
    assert both(["24-9=15", " 15 +7 = 22", "22 + 3 = 25 ", "The answer is:25"])[1] == [True] * 4


def test_a_non_commuting_question_applied_out_of_order():
    # 5 + 3 = 8, 8 * 2 = 16 in the question's order; 5 * 2 + 3 = 13 is another number.
    right = ["5 + 3 = 8", "8 * 2 = 16", "The answer is: 16"]
    assert both(right, "5 + 3 * 2") == ([True] * 3, [True] * 3)
    assert both(["5 + 3 = 8", "2 * 8 = 16", "The answer is: 16"], "5 + 3 * 2")[1] == [True] * 3
    wrong = ["5 * 2 = 10", "10 + 3 = 13", "The answer is: 13"]
    assert both(wrong, "5 + 3 * 2") == ([False, True, False], [False] * 3)


def test_duplicate_operations_in_one_question():
    steps = ["10 + 4 = 14", "14 + 4 = 18", "The answer is: 18"]
    assert both(steps, "10 + 4 + 4") == ([True] * 3, [True] * 3)
    extra = ["10 + 4 = 14", "14 + 4 = 18", "18 + 4 = 22", "The answer is: 22"]
    assert both(extra, "10 + 4 + 4") == ([True, True, False, False], [True, True, False, False])
    # Only one * 2 in this question: its second use is invalid.
    assert both(["3 * 2 = 6", "6 * 2 = 12"], "3 * 2 + 4")[0] == [True, False]


def test_the_answer_phrase_is_the_formats():
    steps = ["5 + 1 = 6", "Answer: 6"]
    assert step_validity("5 + 1", steps, M, "Answer:") == [True, True]
    assert step_validity("5 + 1", steps, M, PHRASE) == [True, False]


def test_every_generated_solution_is_valid():
    # Any order and swapped operands, as the default task writes them; then every operation in
    # the question's order (non-commuting questions included) with a modulus that is not prime.
    tasks = [
        dict(modulus=37, swap_rate=0.5, operations=("+", "-"), any_order=True),
        dict(modulus=20, swap_rate=0.3, operations=("+", "-", "*"), any_order=False),
    ]
    for task in tasks:
        train, test = make_splits(300, 100, [1, 2, 3, 4, 5], seed=3, answer_phrase=PHRASE, **task)
        for p in train + test:
            assert prefix_validity(p.question, p.steps, task["modulus"], PHRASE) == [True] * len(
                p.steps
            ), (p.question, p.steps)


def test_corrupted_solutions_are_invalid_from_the_slip_on():
    # With a prime modulus no later step returns to the true value, so every step from the slip
    # on is invalid on its own terms as well.
    fmt = StepFormat(answer_phrase=PHRASE)
    rng = random.Random(7)
    checked = 0
    for any_order, ops in ((True, ("+", "-")), (False, ("+", "-", "*"))):
        train, _ = make_splits(
            400, 20, [1, 2, 3, 4, 5], M, 11, PHRASE, 0.5, operations=ops, any_order=any_order
        )
        for p in train:
            k = rng.randrange(len(p.steps) - 1)
            steps = corrupted(p, k, rng, fmt)
            expected = [i < k for i in range(len(steps))]
            assert both(steps, p.question) == (expected, expected), (p.question, steps, k)
            checked += 1
    assert checked == 800


SLIPS = ["24 - 9 = 16", "16 + 7 = 22", "22 + 3 = 25", "The answer is: 25"]


def record(question, steps, hard):
    return StepLabelled(
        question_id="q",
        question=question,
        steps=steps,
        soft_labels=[0.5 if h else 0.0 for h in hard],
        hard_labels=hard,
        final_correct=True,
        answer="25",
    )


def test_exact_labels_replace_the_rollout_labels():
    # The cancelling slips: rollouts from each prefix reach the right answer, so all say +.
    slips = record(Q, SLIPS, [True] * 4)
    right = record("5 + 1", ["5 + 1 = 6", "The answer is: 6"], [False, True])
    relabelled = exact_labels([slips, right], M, PHRASE)
    assert [r.hard_labels for r in relabelled] == [[False] * 4, [True, True]]
    assert [r.soft_labels for r in relabelled] == [[0.0] * 4, [1.0, 1.0]]
    assert [(r.steps, r.final_correct, r.answer) for r in relabelled] == [
        (r.steps, r.final_correct, r.answer) for r in (slips, right)
    ]


def test_label_agreement_counts_both_kinds_of_disagreement():
    slips = record(Q, SLIPS, [True] * 4)
    right = record("5 + 1", ["5 + 1 = 6", "The answer is: 6"], [False, True])
    validity = validity_of(M, PHRASE)
    exact = [validity(r.question, r.steps) for r in (slips, right)]
    assert exact == [prefix_validity(r.question, r.steps, M, PHRASE) for r in (slips, right)]
    assert label_agreement([slips.hard_labels, right.hard_labels], exact) == {
        "steps": 6,
        "agree": 1,
        "rate": 1 / 6,
        "rollout_good_exact_bad": 4,
        "rollout_bad_exact_good": 1,
    }
    assert label_agreement([], [])["rate"] is None
    with pytest.raises(ValueError):
        label_agreement([[True, True]], [[True]])
