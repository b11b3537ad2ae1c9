"""Where majority and weighted voting go as the number of samples grows (Wu et al., Theorems 1
and 2): majority vote converges to the share of questions whose most likely answer class is
right, weighted vote to the share whose class of largest expected total reward
(P(class) x E[score | class]) is right.

A question's pool says which class is on top only up to sampling noise: a 5-to-3 split of 8
samples leaves the other class on top quite possibly. So each question contributes the
probability that its right class is on top, under the Bayesian bootstrap of its samples
(Dirichlet(1, ..., 1) weights on them; for majority vote this is a Dirichlet posterior over the
class probabilities), and the limit is the mean of those probabilities. Plugging the pool in
instead (its own top class) is the vote of all N samples, whose accuracy the curve already
shows. The interval draws, for questions resampled with replacement, whether each one's right
class is on top from its probability: the uncertainty of both the questions and their pools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inferscale.scaling.subsets import QuestionPool


@dataclass(frozen=True)
class Limit:
    vote: str  # "majority" or "weighted"
    accuracy: float  # the estimated limit
    low: float  # 95% interval
    high: float
    questions: int


def right_on_top(
    classes: Sequence[int | None],
    correct_classes: Sequence[int],
    scores: Sequence[float] | None,
    rng: np.random.Generator,
    draws: int = 400,
) -> float:
    """The probability that a right class totals the most (count, or summed score when
    `scores` are given) under Dirichlet(1, ..., 1) weights on the samples; ties split evenly."""
    answered = [i for i, c in enumerate(classes) if c is not None]
    if not answered:
        return 0.0
    ids = list(dict.fromkeys(classes[i] for i in answered))
    position = {c: k for k, c in enumerate(ids)}
    membership = np.zeros((len(classes), len(ids)))
    for i in answered:
        membership[i, position[classes[i]]] = 1.0 if scores is None else scores[i]
    right = np.array([c in set(correct_classes) for c in ids])
    if not right.any():
        return 0.0
    if right.all():
        return 1.0
    weights = rng.gamma(1.0, size=(draws, len(classes)))
    totals = weights @ membership
    top = totals == totals.max(axis=1, keepdims=True)
    return float(np.mean((top & right).sum(axis=1) / top.sum(axis=1)))


def voting_limit(
    pools: Sequence[QuestionPool],
    vote: str,
    replicates: int = 200,
    seed: int = 0,
    draws: int = 400,
) -> Limit:
    """The limit accuracy of `vote` ("majority" or "weighted") over the questions of `pools`,
    with a 95% interval."""
    if not pools:
        raise ValueError("no questions")
    if vote not in ("majority", "weighted"):
        raise ValueError(f"unknown vote {vote!r}: majority or weighted")
    if vote == "weighted" and any(p.scores is None for p in pools):
        raise ValueError("the weighted vote's limit needs every sample's score")
    rng = np.random.default_rng(seed)
    probabilities = np.array(
        [
            right_on_top(
                p.classes,
                list(p.correct_classes),
                p.scores if vote == "weighted" else None,
                rng,
                draws,
            )
            for p in pools
        ]
    )
    replicate = [
        rng.random(len(pools)) < probabilities[rng.integers(len(pools), size=len(pools))]
        for _ in range(replicates)
    ]
    estimate = float(probabilities.mean())
    low, high = np.quantile([r.mean() for r in replicate], [0.025, 0.975]) if replicate else (0, 1)
    return Limit(vote, estimate, float(low), float(high), len(pools))
