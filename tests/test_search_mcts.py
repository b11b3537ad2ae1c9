"""MCTS: UCT, selection and backup by hand, and whole searches with a scripted policy and PRM."""

import math

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

from inferscale.search.mcts import (
    UctStats,
    backup,
    mcts,
    refresh_expandable,
    root_children,
    select_path,
    uct,
)

# --- uct, select_path, backup ------------------------------------------------------------------


def test_uct_by_hand():
    # 0.5 + sqrt(ln 3 / 2) and 0.25 + 2 sqrt(ln 16 / 4)
    assert uct(0.5, 2, 3, 1.0) == pytest.approx(1.2411519036837557, rel=1e-12)
    assert uct(0.25, 4, 16, 2.0) == pytest.approx(1.9151092223153954, rel=1e-12)
    assert uct(0.7, 3, 9, 0.0) == 0.7
    assert uct(0.7, 1, 1, 1.0) == 0.7  # ln 1 = 0
    assert uct(0.0, 0, 5, 1.0) == math.inf


def hand_stats() -> UctStats:
    """0 -> (1, 2), 1 -> (3, 4)."""
    return UctStats(
        children=[[1, 2], [3, 4], [], [], []],
        visits=[4, 3, 1, 2, 1],
        values=[0.5, 0.6, 0.0, 0.5, 0.9],
        expandable=[True] * 5,
    )


def test_select_path_follows_the_highest_uct():
    stats = hand_stats()
    # At the root (N = 4): node 1 scores 0.6 + sqrt(ln 4 / 3) = 1.280, node 2 0 + sqrt(ln 4) =
    # 1.177. At node 1 (N = 3): node 3 scores 0.5 + sqrt(ln 3 / 2) = 1.241, node 4
    # 0.9 + sqrt(ln 3) = 1.948.
    assert select_path(stats, 1.0) == [0, 1, 4]
    # With C = 0.1 the exploration term no longer lifts node 2 close: same path.
    assert select_path(stats, 0.1) == [0, 1, 4]
    # With C = 3 node 2's unexplored side wins at the root: 3.532 against 2.639.
    assert select_path(stats, 3.0) == [0, 2]


def test_select_path_skips_what_cannot_be_expanded():
    stats = hand_stats()
    stats.expandable[4] = False
    assert select_path(stats, 1.0) == [0, 1, 3]
    stats.expandable[3] = False
    refresh_expandable([0, 1], stats)
    assert stats.expandable[:3] == [True, False, True]
    assert select_path(stats, 1.0) == [0, 2]
    stats.expandable[2] = False
    refresh_expandable([0], stats)
    assert stats.expandable[0] is False
    assert select_path(stats, 1.0) is None


def test_select_path_prefers_unvisited_children_then_the_first_of_a_tie():
    stats = UctStats(
        children=[[1, 2, 3], [], [], []],
        visits=[2, 1, 1, 0],
        values=[0.5, 1.0, 1.0, 0.0],
        expandable=[True] * 4,
    )
    assert select_path(stats, 1.0) == [0, 3]
    stats.visits[3], stats.values[3] = 1, 1.0
    assert select_path(stats, 1.0) == [0, 1]


def test_a_fresh_tree_selects_its_root():
    assert select_path(UctStats(), 1.0) == [0]


def test_backup_averages_the_value_into_every_node_on_the_path():
    stats = hand_stats()
    stats.visits[:2], stats.values[:2] = [1, 3], [0.5, 0.25]
    stats.add(5, 1, finished=False)
    backup([0, 1, 5], 1.0, stats)
    # root: (1 * 0.5 + 1) / 2; node 1: (3 * 0.25 + 1) / 4; the new node: its own value.
    assert stats.visits == [2, 4, 1, 2, 1, 1]
    assert stats.values == [0.75, 0.4375, 0.0, 0.5, 0.9, 1.0]
    assert stats.children[1] == [3, 4, 5]


def test_backup_twice_is_the_mean_of_both_values():
    stats = UctStats()
    stats.add(1, 0, finished=False)
    backup([0, 1], 0.25, stats)
    backup([0, 1], 0.75, stats)
    assert stats.visits == [2, 2]
    assert stats.values == [0.5, 0.5]


def test_nodes_must_be_added_in_tree_order():
    with pytest.raises(ValueError, match="out of order"):
        UctStats().add(2, 0, finished=False)


def test_root_children_follow_the_paper_and_never_fall_below_two():
    assert [root_children(b) for b in (32, 64, 128)] == [4, 8, 16]
    assert [root_children(b) for b in (1, 2, 8, 16, 20)] == [2, 2, 2, 2, 2]


# --- mcts --------------------------------------------------------------------------------------


def test_mcts_by_hand():
    # Budget 8: 2 root children, then 2 per expansion. Values: "0" 0.9, "1" 0.3, "0.0" 0.2,
    # "0.1" 0.4, the rest 0.5.
    # 2: the root has N = 2; "0" wins (0.9 + sqrt(ln 2) against 0.3 + sqrt(ln 2)).
    # 3: root N = 4, "0" has N = 3, Q = (0.9 + 0.2 + 0.4) / 3 = 0.5: 0.5 + sqrt(ln 4 / 3) = 1.180
    #    against "1": 0.3 + sqrt(ln 4) = 1.477, so "1".
    # 4: root N = 6, "0": 0.5 + sqrt(ln 6 / 3) = 1.273 against "1" (Q = (0.3 + 0.5 + 0.5) / 3):
    #    0.433 + 0.773 = 1.206, so "0"; below it "0.1" (0.4) beats "0.0" (0.2), equal visits.
    backend = ScriptedBackend()
    scorer = ScriptedScorer(scores({"0": 0.9, "1": 0.3, "0.0": 0.2, "0.1": 0.4}))
    (a,) = mcts(problems("a"), backend, scorer, 8, settings())
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 2)],
        [("a", "0", 2)],
        [("a", "1", 2)],
        [("a", "0.1", 2)],
    ]
    assert len(a.nodes) == 1 + 8
    assert a.solutions == []
    assert [len(call) for call in scorer.calls] == [2, 2, 2, 2]


def test_finished_children_are_solutions_and_never_expanded():
    # "0" answers with the best value; selection still has to go through "1".
    backend = ScriptedBackend(endings({("a", "0"): "answer", ("a", "1.1"): "eos"}))
    scorer = ScriptedScorer(scores({"0": 0.9, "1": 0.1}))
    (a,) = mcts(problems("a"), backend, scorer, 6, settings())
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 2)],
        [("a", "1", 2)],
        [("a", "1.0", 2)],
    ]
    assert paths(a, a.solutions) == ["0", "1.1"]


def test_the_budget_counts_generated_nodes_and_the_last_expansion_is_cut_to_fit():
    backend = ScriptedBackend()
    (a,) = mcts(problems("a"), backend, ScriptedScorer(), 5, settings())
    assert [n for call in backend.calls for (_, _, n) in expanded(call)] == [2, 2, 1]
    assert len(a.nodes) == 1 + 5


def test_budget_32_opens_4_root_children_then_2_per_expansion():
    backend = ScriptedBackend()
    (a,) = mcts(problems("a"), backend, ScriptedScorer(), 32, settings())
    counts = [n for call in backend.calls for (_, _, n) in expanded(call)]
    assert counts == [4] + [2] * 14
    assert len(a.nodes) == 1 + 32
    assert sum(1 for n in a.nodes if n.parent == 0) == 4


def test_stops_when_nothing_is_left_to_expand():
    backend = ScriptedBackend(endings({("a", "0"): "answer", ("a", "1"): "eos"}))
    (a,) = mcts(problems("a"), backend, ScriptedScorer(), 8, settings())
    assert len(backend.calls) == 1
    assert paths(a, a.solutions) == ["0", "1"]


def test_nodes_at_max_depth_finish_and_end_the_search():
    backend = ScriptedBackend()
    (a,) = mcts(problems("a"), backend, ScriptedScorer(), 16, settings(max_depth=2))
    # 2 root children, each expanded once into 2 finished leaves: 6 nodes, then nothing is open.
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 2)],
        [("a", "0", 2)],
        [("a", "1", 2)],
    ]
    assert paths(a, a.solutions) == ["0.0", "0.1", "1.0", "1.1"]


def test_one_backend_call_per_iteration_across_questions():
    # Question a is over after its root expansion; b goes on alone.
    backend = ScriptedBackend(endings({("a", "0"): "answer", ("a", "1"): "answer"}))
    scorer = ScriptedScorer()
    a, b = mcts(problems("a", "b"), backend, scorer, 6, settings())
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 2), ("b", "", 2)],
        [("b", "0", 2)],
        [("b", "1", 2)],
    ]
    assert [len(call) for call in scorer.calls] == [4, 2, 2]
    assert len(a.nodes) == 3 and len(b.nodes) == 7
