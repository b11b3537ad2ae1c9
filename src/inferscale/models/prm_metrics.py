"""How good a PRM is, from its step scores on held-out labelled solutions: pure functions.

- Step-level ROC AUC against the hard labels: the probability that a random good step scores
  above a random bad one, ties counting one half.
- Best-of-n selection: over questions with several solutions, how often the solution with the
  highest aggregated score is correct, against the expected correctness of a random pick and
  the share of questions with any correct solution (the oracle).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from inferscale.data.step_validity import label_agreement
from inferscale.search.tree import aggregate
from inferscale.search.voting import best_of_n


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Exact ROC AUC (Mann-Whitney U over mid-ranks); None when one class is absent."""
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if any(math.isnan(s) for s in scores):
        raise ValueError("scores contain NaN")
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0  # sum of the positives' 1-based ranks, tied runs sharing their mean rank
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        mid_rank = (start + end) / 2 + 1
        rank_sum += mid_rank * sum(1 for i in order[start : end + 1] if labels[i])
        start = end + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def best_of_n_selection(
    question_ids: Sequence[str],
    correct: Sequence[bool],
    solution_scores: Sequence[float],
    answered: Sequence[bool] | None = None,
) -> dict[str, float | int]:
    """Accuracy of picking each question's highest-scored solution, by the project's best-of-n
    rule (`search.voting.best_of_n`): a solution without an answer is never picked, ties go to
    the first. Only questions with at least two solutions count. `random` is the mean
    correctness of a uniformly random pick, `oracle` the share of questions with any correct
    solution."""
    answered = [True] * len(correct) if answered is None else answered
    if not len(question_ids) == len(correct) == len(solution_scores) == len(answered):
        raise ValueError("question_ids, correct, solution_scores and answered differ in length")
    groups: dict[str, list[int]] = {}
    for i, qid in enumerate(question_ids):
        groups.setdefault(qid, []).append(i)
    groups = {q: idx for q, idx in groups.items() if len(idx) >= 2}
    if not groups:
        return {"questions": 0}
    picked, random_pick, oracle = [], [], []
    for idx in groups.values():
        # Each solution is its own class, so the vote returns the chosen solution's index.
        best = best_of_n(
            [i if answered[i] else None for i in idx], [solution_scores[i] for i in idx]
        )
        picked.append(float(best is not None and correct[best]))
        random_pick.append(statistics.fmean(float(correct[i]) for i in idx))
        oracle.append(float(any(correct[i] for i in idx)))
    return {
        "questions": len(groups),
        "accuracy": statistics.fmean(picked),
        "random": statistics.fmean(random_pick),
        "oracle": statistics.fmean(oracle),
    }


def evaluate_step_scores(
    question_ids: Sequence[str],
    hard_labels: Sequence[Sequence[bool]],
    final_correct: Sequence[bool],
    step_scores: Sequence[Sequence[float]],
    answered: Sequence[bool] | None = None,
) -> dict[str, float | int | None]:
    """Step AUC and best-of-n (`last` and `min` aggregation) of one PRM's scores."""
    flat_labels = [y for labels in hard_labels for y in labels]
    flat_scores = [s for scores in step_scores for s in scores]
    metrics: dict[str, float | int | None] = {
        "solutions": len(step_scores),
        "steps": len(flat_scores),
        "positive_steps": sum(flat_labels),
        "step_auc": roc_auc(flat_labels, flat_scores),
    }
    for how in ("last", "min"):
        aggregated = [aggregate(s, how) for s in step_scores]
        selection = best_of_n_selection(question_ids, final_correct, aggregated, answered)
        metrics[f"bon_{how}_accuracy"] = selection.get("accuracy")
    # The pick's baselines do not depend on the scores.
    metrics["bon_random_accuracy"] = selection.get("random")
    metrics["bon_oracle_accuracy"] = selection.get("oracle")
    metrics["bon_questions"] = selection["questions"]
    return metrics


Validity = Callable[[str, Sequence[str]], list[bool]]


def score_heldout(
    scorer, records, validity: Validity | None = None
) -> dict[str, float | int | dict | None]:
    """`evaluate_step_scores` of a scorer (anything with `score([(question, steps)])`) on
    held-out step-labelled records, with the seconds the scoring took. Where the task knows
    each prefix's true validity (`validity(question, steps)`, one flag per prefix), also the
    step AUC against it and how often the records' labels agree with it."""
    import time

    start = time.perf_counter()
    scores = scorer.score([(r.question, r.steps) for r in records])
    seconds = time.perf_counter() - start
    metrics: dict[str, float | int | dict | None] = evaluate_step_scores(
        [r.question_id for r in records],
        [r.hard_labels for r in records],
        [r.final_correct for r in records],
        scores,
        [r.answer is not None for r in records],
    )
    if validity is not None:
        truth = [validity(r.question, r.steps) for r in records]
        metrics |= {
            "step_auc_exact": roc_auc(
                [v for flags in truth for v in flags], [x for s in scores for x in s]
            ),
            "exact_positive_steps": sum(v for flags in truth for v in flags),
            "label_agreement": label_agreement([r.hard_labels for r in records], truth),
        }
    metrics["eval_seconds"] = seconds
    return metrics
