"""evaluate_policy's PRM strategies with a scripted policy and PRM: the weighted vote and best-of-n
over the pool, and tree searches stored and resumed per question, with their FLOPs."""

from __future__ import annotations

import math

import pytest
from scripted_search import FMT, ScriptedBackend, ScriptedScorer, settings

from inferscale.compute import ModelCost, forward_flops
from inferscale.data.records import Problem
from inferscale.evaluation import EvaluationPlan, SamplingSettings, evaluate_policy, store_path
from inferscale.generation.base import Completion, Request, Sample
from inferscale.results import ResultStore

COST = ModelCost(non_embedding=1000, total=1200, n_layer=2, d_model=16)
PRM_COST = ModelCost(non_embedding=300, total=400, n_layer=1, d_model=8)
SAMPLING = SamplingSettings(max_new_tokens=20, temperature=0.8, top_p=1.0, batch_size=8, seed=3)


class PoolBackend:
    """Sample i of every request: 'Step 1: w<i>' then an answer. Samples 0 and 1 answer 7 and 8,
    the others answer 9, so 9 has the majority of a pool of 4; the PRM below prefers 7."""

    name = "pool"

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def generate(self, requests: list[Request]) -> list[Completion]:
        self.requests += requests
        out = []
        for r in requests:
            samples = []
            for i in range(r.n):
                answer = {0: "7", 1: "8"}.get(i, "9")
                text = FMT.solution([f"w{i}", FMT.answer_text(answer)])
                samples.append(Sample(text=text, num_tokens=6, finish_reason="eos"))
            out.append(Completion(prompt_tokens=4, samples=samples))
        return out

    def close(self) -> None:
        pass


class StepScorer:
    """Scores step `w<i>` by WEIGHTS[i] and an answer step by 0.5."""

    WEIGHTS = {0: 0.9, 1: 0.2, 2: 0.3, 3: 0.3}

    def __init__(self) -> None:
        self.items = 0

    def score(self, items):
        self.items += len(items)
        out = []
        for _, steps in items:
            out.append([self.WEIGHTS[int(s[1:])] if s.startswith("w") else 0.5 for s in steps])
        return out

    def close(self) -> None:
        pass


def test_weighted_vote_and_best_of_n_read_the_prm_scores_of_the_pool(tmp_path):
    problems = [Problem(id=f"q{i}", question=f"{i}", answer="7") for i in range(3)]
    plan = EvaluationPlan(
        fmt=FMT,
        strategies=["majority_vote", "weighted_vote", "best_of_n"],
        budgets=[1, 2, 4],
        sampling=SAMPLING,
        cost=COST,
        aggregation="min",
        prm_cost=PRM_COST,
    )
    scorer = StepScorer()
    points = evaluate_policy(
        problems, tmp_path, plan, lambda: PoolBackend(), lambda: scorer, log=lambda _: None
    )["points"]
    by_key = {(p.strategy, p.budget): p for p in points}
    # Whole pool: majority picks 9 (wrong); min-aggregated scores 0.5, 0.2, 0.3, 0.3 make the
    # weighted vote 7 (0.5) vs 9 (0.6) -> 9, and best-of-n 7 (0.5 is the single best).
    assert by_key["majority_vote", 4].accuracy == 0.0
    assert by_key["weighted_vote", 4].accuracy == 0.0
    assert by_key["best_of_n", 4].accuracy == 1.0
    # n = 1: each vote picks one random sample; sample 0 is the only right one.
    for strategy in ("majority_vote", "weighted_vote", "best_of_n"):
        assert by_key[strategy, 1].accuracy == pytest.approx(0.25)
    assert scorer.items == 3 * 4  # every sample scored once
    stored = ResultStore(store_path(tmp_path, "samples-n4-prm")).read()
    assert stored[0]["step_scores"] == [[0.9, 0.5], [0.2, 0.5], [0.3, 0.5], [0.3, 0.5]]
    # Full FLOPs add the PRM reading the prompt (4 tokens) once and n of the 4 samples (6
    # tokens each) after it.
    for n in (1, 2, 4):
        majority, weighted = by_key["majority_vote", n], by_key["weighted_vote", n]
        assert weighted.flops_paper == majority.flops_paper
        assert weighted.flops_full - majority.flops_full == pytest.approx(
            forward_flops(PRM_COST, 4) + n * forward_flops(PRM_COST, 6, 4)
        )
    # A second run scores nothing again.
    again = StepScorer()
    evaluate_policy(problems, tmp_path, plan, lambda: PoolBackend(), lambda: again, lambda _: None)
    assert again.items == 0


def tree_plan(**overrides) -> EvaluationPlan:
    values = dict(
        fmt=FMT,
        strategies=["rebase", "beam_search"],
        budgets=[1],
        sampling=SAMPLING,
        cost=COST,
        search=settings(max_depth=3, beam_width=2),
        search_budgets={"rebase": [2, 4], "beam_search": [4]},
        prm_cost=PRM_COST,
    )
    values.update(overrides)
    return EvaluationPlan(**values)


def answer_at_depth_two(question: str, path: str) -> str | None:
    return "answer" if path.count(".") == 1 else None


def test_tree_searches_are_stored_per_question_and_resumed(tmp_path):
    problems = [Problem(id=f"id-{q}", question=q, answer=q) for q in ("3", "5", "8")]
    backend = ScriptedBackend(answer_at_depth_two)
    plan = tree_plan(search_limit=2)
    points = evaluate_policy(
        problems[:1], tmp_path, plan, lambda: backend, lambda: ScriptedScorer(), lambda _: None
    )["points"]
    assert [(p.strategy, p.budget) for p in points] == [
        ("rebase", 2),
        ("rebase", 4),
        ("beam_search", 4),
    ]
    first = {n: ResultStore(store_path(tmp_path, n)).read() for n in ("rebase-b2", "rebase-b4")}
    record = first["rebase-b4"][0]
    # Every solution states the question as its answer, so all are right and in one class.
    assert record["correct"] and record["chosen"] == 0 and len(record["solutions"]) == 4
    assert all(s["answer"] == "3" for s in record["solutions"])
    # A second run with more questions searches only the new one (search_limit = 2).
    backend.calls.clear()
    points = evaluate_policy(
        problems, tmp_path, plan, lambda: backend, lambda: ScriptedScorer(), lambda _: None
    )["points"]
    searched = {ScriptedBackend._parse(r.prompt)[0] for call in backend.calls for r in call}
    assert searched == {"5"}
    for name, records in first.items():
        stored = ResultStore(store_path(tmp_path, name)).read()
        assert stored[0] == records[0] and [r["id"] for r in stored] == ["id-3", "id-5"]
    assert all(p.accuracy == 1.0 for p in points)


def test_pools_are_scored_again_on_the_searched_questions(tmp_path):
    # Only question "3" is ever answered (at depth 1, by every sample and every tree node).
    problems = [Problem(id=f"id-{q}", question=q, answer=q) for q in ("3", "5", "8")]
    backend = ScriptedBackend(lambda question, path: "answer" if question == "3" else None)
    plan = tree_plan(
        strategies=["greedy", "majority_vote", "rebase"],
        budgets=[1, 2],
        search_budgets={"rebase": [2]},
        search_limit=1,
    )
    points = evaluate_policy(
        problems, tmp_path, plan, lambda: backend, lambda: ScriptedScorer(), lambda _: None
    )["points"]
    by_key = {(p.question_set, p.strategy, p.budget): p for p in points}
    assert sorted(by_key) == [
        ("all", "greedy", 1),
        ("all", "majority_vote", 1),
        ("all", "majority_vote", 2),
        ("searched", "greedy", 1),
        ("searched", "majority_vote", 1),
        ("searched", "majority_vote", 2),
        ("searched", "rebase", 2),
    ]
    assert len(points) == len(by_key)
    for key, point in by_key.items():
        on_all = key[0] == "all"
        assert point.questions == (3 if on_all else 1)
        assert point.accuracy == pytest.approx(1 / 3 if on_all else 1.0), key
    # Costs are averaged over the same questions as accuracies: as if "3" were the only one.
    alone = evaluate_policy(
        problems[:1], tmp_path / "3", plan, lambda: backend, ScriptedScorer, lambda _: None
    )["points"]
    for point in alone:
        searched = by_key["searched", point.strategy, point.budget]
        assert (point.flops_paper, point.flops_full) == (
            searched.flops_paper,
            searched.flops_full,
        )


def test_searches_on_every_question_add_no_second_question_set(tmp_path):
    problems = [Problem(id=f"id-{q}", question=q, answer=q) for q in ("3", "5")]
    backend = ScriptedBackend(answer_at_depth_two)
    plan = tree_plan(
        strategies=["greedy", "majority_vote", "rebase"],
        budgets=[1],
        search_budgets={"rebase": [2]},
        search_limit=5,
    )
    points = evaluate_policy(
        problems, tmp_path, plan, lambda: backend, lambda: ScriptedScorer(), lambda _: None
    )["points"]
    assert [(p.question_set, p.strategy, p.questions) for p in points] == [
        ("all", "greedy", 2),
        ("all", "majority_vote", 2),
        ("all", "rebase", 2),
    ]


def test_tree_search_flops_count_every_node_and_every_prm_read(tmp_path):
    problem = Problem(id="id-3", question="3", answer="4")  # every solution answers 3: wrong
    backend = ScriptedBackend(answer_at_depth_two)
    plan = tree_plan(strategies=["rebase"], search_budgets={"rebase": [2]})
    point = evaluate_policy(
        [problem], tmp_path, plan, lambda: backend, lambda: ScriptedScorer(), lambda _: None
    )["points"][0]
    record = ResultStore(store_path(tmp_path, "rebase-b2")).read()[0]
    assert point.accuracy == 0.0 and record["correct"] is False and record["chosen"] == 0
    # Width 2: two depth-1 nodes (paths 0, 1), each expanded once at depth 2 (paths 0.0, 1.0).
    prompt = len(FMT.prompt("3").split())
    node_tokens = {"0": 2, "1": 3, "0.0": 3, "1.0": 3}  # scripted: depth + index + 1
    assert record["nodes"] == 4 and record["tokens"] == sum(node_tokens.values())
    assert point.flops_paper == sum(node_tokens.values()) * 2 * COST.total
    # Policy and PRM read the same chunks: the prompt once, then each node's step on top of
    # its parent's.
    reads = [(prompt, 0), (2, prompt), (3, prompt), (3, prompt + 2), (3, prompt + 3)]
    policy = sum(forward_flops(COST, n, past) for n, past in reads)
    prm = sum(forward_flops(PRM_COST, n, past) for n, past in reads)
    assert point.flops_full == policy + prm
    assert not math.isnan(point.stderr)


def test_prm_strategies_without_a_scorer_are_refused(tmp_path):
    with pytest.raises(ValueError, match="need a PRM scorer"):
        evaluate_policy([], tmp_path, tree_plan(), lambda: None, None, lambda _: None)


def test_questions_share_a_backend_call_by_each_search_s_widest_round():
    from inferscale.evaluation import round_width

    # REBASE and beam search expand up to `budget` nodes per question per round; MCTS one node
    # per question: its root's children, then two.
    assert round_width("rebase", 16) == 16 and round_width("beam_search", 8) == 8
    assert round_width("mcts", 32) == 4 and round_width("mcts", 8) == 2


def test_progress_counts_the_pools_prm_scores_and_each_trees_questions(tmp_path):
    from contextlib import nullcontext

    bars = []

    def progress(what, total, done=0, unit="question"):
        advances: list[int] = []
        bars.append((what, total, done, advances))
        return nullcontext(advances.append)

    problems = [Problem(id=f"id-{q}", question=q, answer=q) for q in ("3", "5", "8")]
    plan = tree_plan(
        strategies=["weighted_vote", "rebase"], budgets=[1, 2], search_budgets={"rebase": [2]}
    )
    evaluate_policy(
        problems,
        tmp_path,
        plan,
        lambda: ScriptedBackend(answer_at_depth_two),
        lambda: ScriptedScorer(),
        lambda _: None,
        progress=progress,
    )
    # batch_size 8: pools of 2 samples, 4 questions a call; rebase at width 2, 4 a call.
    assert bars == [
        ("samples-n2", 3, 0, [3]),
        ("samples-n2-prm", 3, 0, [3]),
        ("rebase-b2", 3, 0, [3]),
    ]
