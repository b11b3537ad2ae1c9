"""REBASE: the width allocation by hand, and whole searches with a scripted policy and PRM."""

import math
import random

import pytest
from scripted_search import (
    ScriptedBackend,
    ScriptedScorer,
    endings,
    expanded,
    paths,
    problems,
    scores,
    settings,
)

from inferscale.search.rebase import allocate_widths, rebase
from inferscale.seeds import derived_seed

# --- allocate_widths ---------------------------------------------------------------------------


def test_widths_by_hand():
    # Order 0.9, 0.7, 0.5; w = 1, e^-1, e^-2 (sum 1.5032): ceil(6 / 1.5032) = ceil(3.99) = 4,
    # then ceil(2 * e^-1 / (e^-1 + e^-2)) = ceil(1.46) = 2, which leaves 0 for the last node.
    assert allocate_widths([0.5, 0.9, 0.7], 6, 0.2) == [0, 4, 2]
    # Tb = 1: w = 1, e^-0.2, e^-0.4 (sum 2.489): ceil(2.41) = 3, ceil(3 * 0.819 / 1.489) = 2, 1.
    assert allocate_widths([0.5, 0.9, 0.7], 6, 1.0) == [1, 3, 2]


def test_ties_keep_the_given_order():
    # Order: node 1, node 2 (tied at 0.8), node 0, node 3:
    # ceil(5 / 2.112) = 3, then ceil(2 / 1.112) = 2.
    assert allocate_widths([0.3, 0.8, 0.8, 0.1], 5, 0.2) == [0, 3, 2, 0]
    # Reversed, the tied pair is still nodes 1 and 2, and the earlier one still gets 3.
    assert allocate_widths([0.1, 0.8, 0.8, 0.3], 5, 0.2) == [0, 3, 2, 0]


def test_equal_scores_split_as_evenly_as_ceil_allows():
    # ceil(10 / 4) = 3, ceil(7 / 3) = 3, ceil(4 / 2) = 2, 2.
    assert allocate_widths([0.5] * 4, 10, 0.2) == [3, 3, 2, 2]
    assert allocate_widths([0.5] * 4, 8, 0.2) == [2, 2, 2, 2]


def test_one_node_takes_the_whole_width():
    assert allocate_widths([0.3], 7, 0.2) == [7]


def test_width_smaller_than_the_number_of_nodes_goes_to_the_best():
    # Tb = 1: ceil(2 / 4.13) = 1 to the best, then ceil(1 * 0.905 / 3.13) = 1 to the second.
    assert allocate_widths([0.1, 0.2, 0.3, 0.4, 0.5], 2, 1.0) == [0, 0, 0, 1, 1]


def test_very_low_temperature_gives_everything_to_the_best_without_overflow():
    assert allocate_widths([0.2, 0.9, 0.5], 8, 0.01) == [0, 8, 0]
    # exp(0.9 / 0.001) overflows a float; the weights relative to the best do not.
    with pytest.raises(OverflowError):
        math.exp(0.9 / 0.001)
    assert allocate_widths([0.2, 0.9, 0.5], 8, 0.001) == [0, 8, 0]
    assert allocate_widths([0.9, 0.9, 0.0], 8, 0.0001) == [4, 4, 0]


def test_rounding_does_not_push_the_widths_past_the_total():
    # In floats the running sum of the remaining weights drifts below the last weight, so the
    # last ceil gives 10 and the widths sum to 35; the exact quotients give 10, 15, 9.
    assert allocate_widths([0.2, 0.5, 0.1], 34, 1.0) == [10, 15, 9]


def test_zero_width_and_no_nodes():
    assert allocate_widths([0.4, 0.6], 0, 0.2) == [0, 0]
    assert allocate_widths([], 0, 0.2) == []


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        allocate_widths([0.5], 3, 0.0)
    with pytest.raises(ValueError, match="negative"):
        allocate_widths([0.5], -1, 0.2)
    with pytest.raises(ValueError, match="no nodes"):
        allocate_widths([], 3, 0.2)
    with pytest.raises(ValueError, match="finite"):
        allocate_widths([0.5, math.nan], 3, 0.2)


def test_widths_always_sum_to_the_width_and_fall_with_the_score():
    rng = random.Random(20240807)
    for _ in range(2000):
        count = rng.randint(1, 24)
        width = rng.randint(0, 128)
        temperature = rng.choice([0.001, 0.01, 0.1, 0.2, 1.0, 10.0])
        scores = [rng.choice([rng.random(), 0.5, 0.0, 1.0]) for _ in range(count)]
        widths = allocate_widths(scores, width, temperature)
        assert sum(widths) == width
        assert all(w >= 0 for w in widths)
        by_score = sorted(range(count), key=lambda j: -scores[j])
        in_order = [widths[j] for j in by_score]
        assert in_order == sorted(in_order, reverse=True)


# --- rebase ------------------------------------------------------------------------------------


def test_rebase_by_hand_on_two_questions():
    # Question a, width 4, Tb = 1. Depth 1: "1" answers, so 3 is left for 0, 2, 3 (scores 0.9,
    # 0.5, 0.1): widths 2, 1, 0 (ceil(3 / 2.12) = 2, ceil(1 * 0.67 / 1.12) = 1). Depth 2: "0.0"
    # answers and "0.1" stops (eos), so 1 is left for "2.0", whose child ends at max depth 3.
    # Question b: "0" and "1" answer at depth 1; "2" and "3" get one child each, both answers.
    backend = ScriptedBackend(
        endings(
            {
                ("a", "1"): "answer",
                ("a", "0.0"): "answer",
                ("a", "0.1"): "eos",
                ("b", "0"): "answer",
                ("b", "1"): "answer",
                ("b", "2.0"): "answer",
                ("b", "3.0"): "answer",
            }
        )
    )
    a_scores = scores({"0": 0.9, "2": 0.5, "3": 0.1})
    scorer = ScriptedScorer(lambda q, path: a_scores(q, path) if q == "a" else 0.5)
    a, b = rebase(
        problems("a", "b"), backend, scorer, 4, settings(max_depth=3, balance_temperature=1.0)
    )

    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 4), ("b", "", 4)],
        [("a", "0", 2), ("a", "2", 1), ("b", "2", 1), ("b", "3", 1)],
        [("a", "2.0", 1)],
    ]
    assert len(scorer.calls) == 3
    assert [len(call) for call in scorer.calls] == [8, 5, 1]
    assert paths(a, a.solutions) == ["1", "0.0", "0.1", "2.0.0"]
    assert paths(b, b.solutions) == ["0", "1", "2.0", "3.0"]
    assert a.nodes[a.solutions[-1]].finish_reason == "stop"  # finished by depth alone
    assert len(a.nodes) == 1 + 4 + 3 + 1
    assert a.scored_nodes == list(range(1, 9))
    assert a.step_scores(a.solutions[-1]) == [0.5, 0.5, 0.5]


def test_finished_nodes_take_width_off_the_next_depth():
    # Width 6; three of the first six steps answer, so depth 2 spreads 3, not 6, over 3 nodes.
    backend = ScriptedBackend(endings({("a", p): "answer" for p in ("1", "3", "5")}))
    rebase(problems("a"), backend, ScriptedScorer(), 6, settings(max_depth=2))
    assert expanded(backend.calls[1]) == [("a", "0", 1), ("a", "2", 1), ("a", "4", 1)]


def test_stops_when_every_node_finished():
    backend = ScriptedBackend(endings({("a", p): "eos" for p in "012"}))
    scorer = ScriptedScorer()
    (a,) = rebase(problems("a"), backend, scorer, 3, settings())
    assert len(backend.calls) == 1
    assert len(scorer.calls) == 1
    assert paths(a, a.solutions) == ["0", "1", "2"]


def test_stops_at_max_depth_with_every_open_node_a_solution():
    backend = ScriptedBackend()  # nothing ever answers
    (a,) = rebase(problems("a"), backend, ScriptedScorer(), 3, settings(max_depth=2))
    assert len(backend.calls) == 2
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 3)],
        [("a", "0", 1), ("a", "1", 1), ("a", "2", 1)],
    ]
    assert paths(a, a.solutions) == ["0.0", "1.0", "2.0"]
    assert all(a.nodes[i].depth == 2 and a.nodes[i].finished for i in a.solutions)


def test_a_question_with_no_width_left_leaves_the_batch():
    backend = ScriptedBackend(endings({("a", p): "answer" for p in "01"}))
    rebase(problems("a", "b"), backend, ScriptedScorer(), 2, settings(max_depth=3))
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 2), ("b", "", 2)],
        [("b", "0", 1), ("b", "1", 1)],
        [("b", "0.0", 1), ("b", "1.0", 1)],
    ]


def test_each_request_has_its_own_seed():
    backend = ScriptedBackend()
    rebase(problems("a", "b"), backend, ScriptedScorer(), 4, settings(max_depth=3, seed=11))
    (a_root, b_root), *_ = backend.calls
    assert a_root.seed == derived_seed(11, "id-a", 0)
    assert b_root.seed == derived_seed(11, "id-b", 0)
    seeds = [r.seed for call in backend.calls for r in call]
    assert len(seeds) == 2 + 8 + 8
    assert len(set(seeds)) == len(seeds)
