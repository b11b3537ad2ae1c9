"""What the tree searches share: aggregation, the search tree, batched expansion and scoring."""

import pytest
from scripted_search import (
    FMT,
    ScriptedBackend,
    ScriptedScorer,
    endings,
    paths,
    problems,
    prompt_tokens,
    scores,
    settings,
    step_tokens,
)

from inferscale.generation.base import Request
from inferscale.search.beam import beam_search
from inferscale.search.mcts import mcts
from inferscale.search.rebase import rebase
from inferscale.search.registry import STRATEGIES, TREE_STRATEGIES
from inferscale.search.searches import SEARCHES
from inferscale.search.tree import (
    Node,
    SearchResult,
    aggregate,
    expand,
    is_finished,
    new_search,
    score_nodes,
)
from inferscale.seeds import derived_seed


def test_aggregate_each_way():
    step_scores = [0.5, 0.25, 0.75]
    assert aggregate(step_scores, "last") == 0.75
    assert aggregate(step_scores, "min") == 0.25
    assert aggregate(step_scores, "prod") == 0.09375
    assert aggregate(step_scores, "mean") == 0.5
    assert aggregate([0.3], "prod") == 0.3


def test_aggregate_refuses_no_steps_and_unknown_ways():
    for how in ("last", "min", "prod", "mean"):
        with pytest.raises(ValueError, match="no steps"):
            aggregate([], how)
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate([0.5], "max")


def hand_tree() -> SearchResult:
    """root -> 1 -> 2 (finished), root -> 3."""
    result = new_search(problems("q")[0], FMT)
    result.prompt_tokens = 6
    result.nodes += [
        Node(0, "Step 1: a ки", 4, 1, "stop", 6, score=0.5),
        Node(1, "\nStep 2: The answer is: 3 ки", 7, 2, "stop", 10, score=0.25, finished=True),
        Node(0, "Step 1: b", 2, 1, "eos", 6, score=0.75, finished=True),
    ]
    return result


def test_search_result_walks_from_the_root():
    result = hand_tree()
    assert result.path(2) == [1, 2]
    assert result.path(0) == []
    assert result.solution_text(2) == "Step 1: a ки\nStep 2: The answer is: 3 ки"
    assert result.steps(2) == ["a", "The answer is: 3"]
    assert result.steps(3) == ["b"]
    assert result.step_scores(2) == [0.5, 0.25]
    assert result.solution_score(2, "prod") == 0.125
    assert result.generated_tokens == 13


def test_step_scores_refuse_unscored_nodes():
    result = hand_tree()
    result.nodes[1].score = None
    with pytest.raises(ValueError, match="unscored"):
        result.step_scores(2)


def test_a_node_finishes_on_an_answer_a_stop_of_the_policy_or_the_depth_limit():
    s = settings(max_depth=3)
    assert not is_finished("Step 1: 2 + 3 = 5 ки", "stop", 1, s)
    assert is_finished("\nStep 2: The answer is: 5 ки", "stop", 2, s)
    assert is_finished("Step 2: so \\boxed{5}", "stop", 2, s)
    assert is_finished("Step 1: 2 + 3", "eos", 1, s)
    assert is_finished("Step 1: 2 + 3", "length", 1, s)
    assert is_finished("Step 3: 2 + 3 = 5 ки", "stop", 3, s)
    # An answer phrase with no answer after it is not an answer.
    assert not is_finished("Step 1: The answer is: ки", "stop", 1, s)


def test_request_seeds_are_deterministic_and_distinct():
    seeds = {derived_seed(5, f"id-{q}", node) for q in range(20) for node in range(50)}
    assert len(seeds) == 1000
    assert derived_seed(5, "id-a", 3) == derived_seed(5, "id-a", 3)
    assert derived_seed(5, "id-a", 3) != derived_seed(6, "id-a", 3)
    assert all(0 <= seed < 2**30 for seed in seeds)


def test_expand_makes_one_call_for_all_questions_and_records_tokens():
    s = settings()
    backend = ScriptedBackend(endings({("b", "1"): "answer"}))
    searches = [new_search(p, FMT) for p in problems("a", "b")]
    new = expand(searches, [(0, 0, 2), (1, 0, 3), (0, 0, 0)], backend, s)
    assert new == [(0, 1), (0, 2), (1, 1), (1, 2), (1, 3)]
    assert backend.calls == [
        [
            Request(
                prompt="Question: a\nAnswer:\n",
                n=2,
                temperature=0.7,
                top_p=0.9,
                max_new_tokens=12,
                stop=(" ки",),
                seed=derived_seed(5, "id-a", 0),
            ),
            Request(
                prompt="Question: b\nAnswer:\n",
                n=3,
                temperature=0.7,
                top_p=0.9,
                max_new_tokens=12,
                stop=(" ки",),
                seed=derived_seed(5, "id-b", 0),
            ),
        ]
    ]
    a, b = searches
    assert a.prompt_tokens == b.prompt_tokens == prompt_tokens("a") == 3
    assert [n.text for n in a.nodes[1:]] == ["Step 1: s0 ки", "Step 1: s1 ки"]
    assert [n.finished for n in b.nodes[1:]] == [False, True, False]
    assert [n.num_tokens for n in b.nodes[1:]] == [2, 3, 4]
    assert [n.context_tokens for n in b.nodes[1:]] == [3, 3, 3]
    assert [(n.parent, n.depth, n.finish_reason) for n in b.nodes[1:]] == [(0, 1, "stop")] * 3

    new = expand(searches, [(1, 3, 2)], backend, s)
    assert new == [(1, 4), (1, 5)]
    assert backend.calls[1][0].prompt == "Question: b\nAnswer:\nStep 1: s2 ки"
    assert backend.calls[1][0].seed == derived_seed(5, "id-b", 3)
    assert b.nodes[4].text == "\nStep 2: s2.0 ки"
    assert [n.context_tokens for n in b.nodes[4:]] == [3 + step_tokens("2")] * 2
    assert b.generated_tokens == 2 + 3 + 4 + step_tokens("2.0") + step_tokens("2.1")


def test_expand_without_requests_does_not_call_the_backend():
    backend = ScriptedBackend()
    searches = [new_search(p, FMT) for p in problems("a")]
    assert expand(searches, [(0, 0, 0)], backend, settings()) == []
    assert backend.calls == []


def test_score_nodes_makes_one_call_and_keeps_the_last_step_score():
    backend = ScriptedBackend()
    scorer = ScriptedScorer(scores({"0": 0.25, "0.0": 0.75, "0.1": 0.5}))
    searches = [new_search(p, FMT) for p in problems("a", "b")]
    first = expand(searches, [(0, 0, 1), (1, 0, 1)], backend, settings())
    score_nodes(searches, first, scorer)
    second = expand(searches, [(0, 1, 2)], backend, settings())
    score_nodes(searches, second, scorer)
    assert scorer.calls == [
        [("a", ["s0"]), ("b", ["s0"])],
        [("a", ["s0", "s0.0"]), ("a", ["s0", "s0.1"])],
    ]
    a, b = searches
    assert [n.score for n in a.nodes[1:]] == [0.25, 0.75, 0.5]
    assert a.scored_nodes == [1, 2, 3]
    assert b.scored_nodes == [1]
    assert a.step_scores(3) == [0.25, 0.5]


def test_every_strategy_is_registered_under_its_name():
    assert {"rebase": rebase, "mcts": mcts, "beam_search": beam_search} == SEARCHES
    assert all(STRATEGIES[name].needs_prm for name in TREE_STRATEGIES)
    assert [s.name for s in STRATEGIES.values() if s.name not in SEARCHES] == [
        "greedy",
        "majority_vote",
        "weighted_vote",
        "best_of_n",
    ]


def test_seeds_are_those_of_earlier_runs():
    """Resumed evaluations and their byte-identical results rely on these exact values."""
    assert derived_seed(1234, "q-17") == 919321073
    assert derived_seed(0, "arith-3-0042") == 44105324
    assert derived_seed(1234, "q-17", 0) == 257519167
    assert derived_seed(5, "id-a", 3) == 541043591


@pytest.mark.parametrize("strategy", sorted(TREE_STRATEGIES))
def test_every_strategy_needs_a_scorer_and_a_budget(strategy):
    search = SEARCHES[strategy]
    with pytest.raises(ValueError, match="needs a PRM scorer"):
        search(problems("a"), ScriptedBackend(), None, 4, settings())
    with pytest.raises(ValueError, match="budget of at least 1"):
        search(problems("a"), ScriptedBackend(), ScriptedScorer(), 0, settings())


@pytest.mark.parametrize("strategy", sorted(TREE_STRATEGIES))
def test_every_strategy_scores_each_new_node_once_and_seeds_each_request_apart(strategy):
    backend = ScriptedBackend(endings({("a", "0.1"): "answer", ("b", "2"): "eos"}))
    scorer = ScriptedScorer(scores({"0": 0.9, "1": 0.2, "0.0": 0.4}))
    results = SEARCHES[strategy](
        problems("a", "b"), backend, scorer, 4, settings(max_depth=3, beam_width=2)
    )
    seeds = [r.seed for call in backend.calls for r in call]
    assert len(set(seeds)) == len(seeds)
    for result in results:
        assert sorted(result.scored_nodes) == list(range(1, len(result.nodes)))
        assert all(result.nodes[i].finished for i in result.solutions)
        assert len(paths(result, result.solutions)) == len(set(result.solutions))
    assert len(scorer.calls) == len(backend.calls)


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="max_depth"):
        settings(max_depth=0)
    with pytest.raises(ValueError, match="aggregation"):
        settings(aggregation="max")
    with pytest.raises(ValueError, match="balance_temperature"):
        settings(balance_temperature=0.0)
    with pytest.raises(ValueError, match="beam_width"):
        settings(beam_width=0)
