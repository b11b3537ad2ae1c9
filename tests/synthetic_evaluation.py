"""Evaluations of policies made up from known answer distributions, scored by evaluation's own
functions, for the analysis and report tests (no model, no backend)."""

from __future__ import annotations

import dataclasses

import numpy as np

from inferscale.analysis.evaluations import PolicyEvaluation
from inferscale.compute import ModelCost, count_parameters
from inferscale.evaluation import ALL, SEARCHED, greedy_scores, tree_scores, vote_scores
from inferscale.scores import EvaluationMetrics, PoolRecord, points_over

LEVELS = (1, 2, 3, 4, 5)
BUDGETS = [1, 2, 4, 8, 16]


def model_config(hidden: int, layers: int) -> dict:
    return {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "vocab_size": 64,
        "tie_word_embeddings": True,
    }


def synthetic_evaluation(
    name: str,
    skill: float,
    hidden: int,
    questions: int = 60,
    searched: int = 20,
    seed: int = 0,
) -> PolicyEvaluation:
    """A policy whose samples are right with probability skill^level (else one of 4 wrong
    answers), greedy right when that is above 1/2, PRM scores higher for right samples, and a
    REBASE at widths 4 and 8 that finds a right answer with the pool's coverage."""
    rng = np.random.default_rng(seed)
    config = model_config(hidden, 2)
    cost = ModelCost.from_config(config)
    pool_records, greedy_records, prm_scores, tree = [], [], [], {4: [], 8: []}
    for q in range(questions):
        level = LEVELS[q % len(LEVELS)]
        p_right = skill**level
        right = rng.random(BUDGETS[-1]) < p_right
        classes = [0 if r else int(rng.integers(1, 5)) for r in right]
        tokens = [int(t) for t in rng.integers(8, 20, size=len(classes))]
        base = {"id": f"q{q}", "level": level, "prompt_tokens": 12, "correct_classes": [0]}
        pool_records.append(
            {**base, "classes": classes, "samples": [{"tokens": t} for t in tokens]}
        )
        greedy_right = p_right > 0.5
        greedy_records.append(
            {
                **base,
                "classes": [0 if greedy_right else 1],
                "correct_classes": [0] if greedy_right else [],
                "samples": [{"tokens": 12}],
            }
        )
        prm_scores.append(
            {
                "id": f"q{q}",
                "step_scores": [
                    [float(np.clip(rng.normal(0.7 if r else 0.4, 0.15), 0, 1))] for r in right
                ],
            }
        )
        if q < searched:
            for width in tree:
                found = bool(rng.random() < 1 - (1 - p_right) ** width)
                tree[width].append(
                    {
                        **base,
                        "correct": found and rng.random() < 0.8,
                        "correct_classes": [0] if found else [],
                        "flops_paper": width * 14 * 2 * cost.total,
                        "flops_full": width * 14 * 3 * cost.total,
                        "tokens": width * 14,
                    }
                )
    prm_cost = ModelCost.from_config(model_config(32, 1))
    scores = greedy_scores(greedy_records, cost, "total")
    for strategy in ("majority_vote", "weighted_vote", "best_of_n"):
        scores += vote_scores(
            pool_records, strategy, BUDGETS, cost, "total", seed, prm_scores, "last", prm_cost
        )
    for width, records in tree.items():
        scores += tree_scores(records, "rebase", width)
    ids = {f"q{q}" for q in range(questions)}
    points = points_over(scores, ids, ALL) + points_over(
        scores, {f"q{q}" for q in range(searched)}, SEARCHED
    )
    parameters = count_parameters(config)
    metrics = EvaluationMetrics(
        policy=name,
        params=parameters["total"],
        parameters=parameters,
        cost=cost,
        paper_params="total",
        questions=questions,
        seconds=1.0,
        points=points,
        greedy_accuracy_by_level={
            str(level): float(
                np.mean([bool(r["correct_classes"]) for r in greedy_records if r["level"] == level])
            )
            for level in LEVELS
        },
    )
    return PolicyEvaluation(
        name=name,
        metrics=metrics,
        scores=scores,
        pools=[PoolRecord.from_json(r) for r in pool_records],
        sample_scores={r["id"]: [s[0] for s in r["step_scores"]] for r in prm_scores},
    )


def two_policies() -> dict[str, PolicyEvaluation]:
    return {
        "S": synthetic_evaluation("S", 0.8, 64, seed=1),
        "L": synthetic_evaluation("L", 0.9, 128, seed=2),
    }


def without_prm(evaluation: PolicyEvaluation) -> PolicyEvaluation:
    """The evaluation as if it had run greedy decoding and majority vote alone."""
    kept = {"greedy", "majority_vote"}
    scores = [s for s in evaluation.scores if s.strategy in kept]
    points = [p for p in evaluation.metrics.points if p.strategy in kept and p.question_set == ALL]
    metrics = dataclasses.replace(evaluation.metrics, points=points)
    return dataclasses.replace(evaluation, metrics=metrics, scores=scores, sample_scores={})
