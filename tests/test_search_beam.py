"""Beam search: pruning by hand, and whole searches with a scripted policy and PRM."""

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

from inferscale.search.beam import beam_search, top_nodes


def test_top_nodes_keeps_exactly_the_best_in_node_order():
    assert top_nodes([0.1, 0.9, 0.5, 0.8, 0.3], 2) == [1, 3]
    assert top_nodes([0.1, 0.9, 0.5, 0.8, 0.3], 3) == [1, 2, 3]
    assert top_nodes([0.4, 0.9, 0.9, 0.9], 2) == [1, 2]  # ties: the earlier nodes
    assert top_nodes([0.4, 0.2], 5) == [0, 1]
    assert top_nodes([0.4, 0.2], 0) == []


def test_beam_search_by_hand():
    # N = 4, M = 2: keep 2. Depth 1: "1" (0.8) and "3" (0.7) survive. Depth 2: "1.1" answers;
    # of "1.0" (0.2), "3.0" (0.9), "3.1" (0.4) the last two survive. Depth 3 = max depth: all
    # four finish, and only the first three fit beside "1.1" in the N = 4 solutions.
    backend = ScriptedBackend(endings({("a", "1.1"): "answer"}))
    table = {"0": 0.1, "1": 0.8, "2": 0.6, "3": 0.7, "1.0": 0.2, "3.0": 0.9, "3.1": 0.4}
    scorer = ScriptedScorer(scores(table))
    (a,) = beam_search(problems("a"), backend, scorer, 4, settings(max_depth=3, beam_width=2))
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 4)],
        [("a", "1", 2), ("a", "3", 2)],
        [("a", "3.0", 2), ("a", "3.1", 2)],
    ]
    assert paths(a, a.solutions) == ["1.1", "3.0.0", "3.0.1", "3.1.0"]
    assert a.nodes[-1].finished and len(a.nodes) == 1 + 4 + 4 + 4
    assert [len(call) for call in scorer.calls] == [4, 4, 4]


@pytest.mark.parametrize(
    ("aggregation", "survivors"),
    [("last", ["1.0", "1.1"]), ("min", ["0.0", "0.1"]), ("prod", ["0.0", "0.1"])],
)
def test_beams_are_ranked_by_the_aggregated_step_scores(aggregation, survivors):
    # Depth 1 keeps "0" (0.9) and "1" (0.3). At depth 2 the last steps favour the children of
    # "1" (0.6, 0.5 against 0.4, 0.35), their minimum and product the children of "0".
    table = {"0": 0.9, "1": 0.3, "2": 0.1, "3": 0.1, "0.0": 0.4, "0.1": 0.35, "1.0": 0.6}
    table["1.1"] = 0.5
    backend = ScriptedBackend()
    beam_search(
        problems("a"),
        backend,
        ScriptedScorer(scores(table)),
        4,
        settings(max_depth=3, beam_width=2, aggregation=aggregation),
    )
    assert expanded(backend.calls[2]) == [("a", p, 2) for p in survivors]


def test_stops_when_every_beam_finished():
    backend = ScriptedBackend(endings({("a", p): "answer" for p in "0123"}))
    (a,) = beam_search(problems("a"), backend, ScriptedScorer(), 4, settings(beam_width=2))
    assert len(backend.calls) == 1
    assert paths(a, a.solutions) == ["0", "1", "2", "3"]


def test_stops_once_n_solutions_are_collected():
    # Three of four answer at depth 1, then both children of the one survivor answer: 5 > N = 4.
    table = {("a", p): "answer" for p in ("0", "1", "2", "3.0", "3.1")}
    backend = ScriptedBackend(endings(table))
    (a,) = beam_search(problems("a"), backend, ScriptedScorer(), 4, settings(beam_width=4))
    assert [expanded(call) for call in backend.calls] == [[("a", "", 4)], [("a", "3", 4)]]
    assert paths(a, a.solutions) == ["0", "1", "2", "3.0"]


def test_width_equal_to_n_keeps_one_beam():
    backend = ScriptedBackend()
    scorer = ScriptedScorer(scores({"2": 0.9, "2.1": 0.8}))
    (a,) = beam_search(problems("a"), backend, scorer, 3, settings(max_depth=3, beam_width=3))
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 3)],
        [("a", "2", 3)],
        [("a", "2.1", 3)],
    ]
    assert paths(a, a.solutions) == ["2.1.0", "2.1.1", "2.1.2"]


def test_one_backend_call_per_depth_across_questions():
    backend = ScriptedBackend(endings({("a", p): "eos" for p in "0123"}))
    beam_search(
        problems("a", "b"), backend, ScriptedScorer(), 4, settings(max_depth=2, beam_width=2)
    )
    assert [expanded(call) for call in backend.calls] == [
        [("a", "", 4), ("b", "", 4)],
        [("b", "0", 2), ("b", "1", 2)],
    ]


def test_n_must_be_a_multiple_of_the_width():
    with pytest.raises(ValueError, match=r"N = 6.*M = 4"):
        beam_search(problems("a"), ScriptedBackend(), ScriptedScorer(), 6, settings(beam_width=4))
    with pytest.raises(ValueError, match=r"N = 2.*M = 4"):
        beam_search(problems("a"), ScriptedBackend(), ScriptedScorer(), 2, settings(beam_width=4))
