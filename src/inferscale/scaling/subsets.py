"""Expected accuracy of a vote at every budget n <= N from one pool of N samples per question.

The accuracy at budget n is the expectation over subsets of n samples drawn without replacement
from the pool and put in a uniformly random order, the order that "ties go to the class seen
first" refers to (see `inferscale.search.voting`). Over the random order of a fixed subset, the
first-seen of a set of tied candidates is uniform among them, so each subset's accuracy is
computed exactly from its tie structure:

- majority / weighted: among the tied classes, class c wins with probability
  (members of c in the subset) / (members of all tied classes in the subset);
- best_of_n: among the candidates tied at the top score, each is picked with equal probability.

The expectation over subsets is exact (all C(N, n) subsets) when C(N, n) <= max_exact, else a
Monte Carlo mean over `draws` random subsets (the first n entries of seeded random permutations).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Vote = Literal["majority", "weighted", "best_of_n"]
Seed = int | Sequence[int]


@dataclass(frozen=True)
class QuestionPool:
    """One question's pool of samples: answer class per sample (None: no answer), the classes
    that are correct, and per-sample scores (needed by the weighted and best_of_n votes)."""

    classes: Sequence[int | None]
    correct_classes: Collection[int]
    scores: Sequence[float] | None = None


def expected_vote_accuracy(
    classes: Sequence[int | None],
    correct_classes: Collection[int],
    n: int,
    vote: Vote = "majority",
    scores: Sequence[float] | None = None,
    max_exact: int = 5000,
    draws: int = 2000,
    seed: Seed = 0,
) -> float:
    """Expected accuracy of `vote` over random ordered subsets of size n of the pool."""
    pool_size = len(classes)
    if not 1 <= n <= pool_size:
        raise ValueError(f"budget n={n} outside 1..{pool_size}")
    class_index, is_correct_class = _dense_classes(classes, correct_classes)
    pool_scores = _pool_scores(vote, scores, pool_size)
    if math.comb(pool_size, n) <= max_exact:
        subsets = np.array(list(itertools.combinations(range(pool_size), n)), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        permutations = rng.permuted(np.tile(np.arange(pool_size), (draws, 1)), axis=1)
        # Sorted rows make per-class score sums identical to the exact mode's for the same subset.
        subsets = np.sort(permutations[:, :n], axis=1)
    return float(
        _subset_accuracies(vote, subsets, class_index, is_correct_class, pool_scores).mean()
    )


def question_accuracies(
    per_question: Sequence[QuestionPool],
    n: int,
    vote: Vote = "majority",
    seeds: Sequence[Seed] | None = None,
    max_exact: int = 5000,
    draws: int = 2000,
) -> np.ndarray:
    """Each question's expected accuracy at budget n; `seeds` (one per question, default its
    position) seed the Monte Carlo subsets where the exact expectation is too costly."""
    if seeds is None:
        seeds = [(question,) for question in range(len(per_question))]
    if len(seeds) != len(per_question):
        raise ValueError(f"{len(seeds)} seeds for {len(per_question)} questions")
    return np.array(
        [
            expected_vote_accuracy(
                pool.classes,
                pool.correct_classes,
                n,
                vote,
                pool.scores,
                max_exact=max_exact,
                draws=draws,
                seed=(*np.atleast_1d(seed).tolist(), n),
            )
            for pool, seed in zip(per_question, seeds, strict=True)
        ]
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # Product form (Chen et al. 2021) avoids the huge binomials.
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def budgets_up_to(pool_size: int) -> list[int]:
    """Powers of two up to pool_size, with pool_size itself appended when it is not one."""
    if pool_size < 1:
        raise ValueError(f"pool size must be >= 1, got {pool_size}")
    budgets = [2**i for i in range(pool_size.bit_length()) if 2**i <= pool_size]
    if budgets[-1] != pool_size:
        budgets.append(pool_size)
    return budgets


def _dense_classes(
    classes: Sequence[int | None], correct_classes: Collection[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Class ids renumbered 0..K-1 (None -> K, an extra bucket) and a correctness flag per id."""
    ids = list(dict.fromkeys(c for c in classes if c is not None))
    position = {c: i for i, c in enumerate(ids)}
    class_index = np.array([len(ids) if c is None else position[c] for c in classes], np.int64)
    correct = set(correct_classes)
    is_correct_class = np.array([c in correct for c in ids] + [False])
    return class_index, is_correct_class


def _pool_scores(vote: Vote, scores: Sequence[float] | None, pool_size: int) -> np.ndarray:
    if vote == "majority":
        return np.zeros(pool_size)
    if vote not in ("weighted", "best_of_n"):
        raise ValueError(f"unknown vote {vote!r}")
    if scores is None or len(scores) != pool_size:
        raise ValueError(f"the {vote} vote needs one score per sample")
    pool_scores = np.asarray(scores, dtype=float)
    if not np.isfinite(pool_scores).all():
        raise ValueError("scores must be finite")
    return pool_scores


def _subset_accuracies(
    vote: Vote,
    subsets: np.ndarray,
    class_index: np.ndarray,
    is_correct_class: np.ndarray,
    pool_scores: np.ndarray,
) -> np.ndarray:
    """Probability that each subset (one row of pool indices) votes for a correct class."""
    subset_classes = class_index[subsets]
    answered = subset_classes < len(is_correct_class) - 1
    if vote == "best_of_n":
        subset_scores = np.where(answered, pool_scores[subsets], -np.inf)
        top = answered & (subset_scores == subset_scores.max(axis=1, keepdims=True))
        return _share(top & is_correct_class[subset_classes], top)
    counts = _per_class_sums(subset_classes, np.ones(subsets.shape), len(is_correct_class))
    if vote == "majority":
        totals = counts
    else:
        totals = _per_class_sums(subset_classes, pool_scores[subsets], len(is_correct_class))
    totals = np.where(counts > 0, totals, -np.inf)
    totals[:, -1] = -np.inf  # the no-answer bucket never wins
    tied_members = np.where(totals == totals.max(axis=1, keepdims=True), counts, 0.0)
    tied_members[:, -1] = 0.0
    return _share(tied_members * is_correct_class, tied_members)


def _per_class_sums(subset_classes: np.ndarray, values: np.ndarray, n_buckets: int) -> np.ndarray:
    rows = subset_classes.shape[0]
    flat = (subset_classes + n_buckets * np.arange(rows)[:, None]).ravel()
    sums = np.bincount(flat, weights=values.ravel(), minlength=rows * n_buckets)
    return sums.reshape(rows, n_buckets)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Row sums of part over row sums of whole; 0 where whole is empty (no answer at all)."""
    part_sum, whole_sum = part.sum(axis=1), whole.sum(axis=1)
    return np.divide(part_sum, whole_sum, out=np.zeros(len(whole_sum)), where=whole_sum > 0)
