"""Coverage from per-question counts: the unbiased pass@k estimator against enumeration, the
curve's standard error, and the failure histogram of sub-pools."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from inferscale.scaling.coverage import (
    Counts,
    coverage_curve,
    failure_histogram,
    pass_at_k_table,
)


def enumerated_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of the C(n, k) subsets of k samples that hold a right one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 13))
def test_pass_at_k_equals_enumeration_for_small_pools(n):
    counts = Counts.from_pairs([(n, c) for c in range(n + 1)])
    table = pass_at_k_table(counts, list(range(1, n + 1)))
    for row, c in enumerate(counts.c):
        for k in range(1, n + 1):
            assert table[row, k - 1] == pytest.approx(enumerated_pass_at_k(n, int(c), k), abs=1e-12)


def test_curve_is_the_mean_over_questions_with_its_standard_error():
    pairs = [(4, 0), (4, 1), (4, 1), (4, 4)]
    curve = coverage_curve(Counts.from_pairs(pairs), [1, 2])
    per_question = np.array([[0, 0], [0.25, 0.5], [0.25, 0.5], [1, 1]])
    assert curve.coverage == pytest.approx(per_question.mean(axis=0))
    assert curve.stderr == pytest.approx(per_question.std(axis=0, ddof=1) / 2)
    assert curve.questions == 4


def test_failure_histogram_of_whole_pools_is_the_observed_counts():
    counts = Counts.from_pairs([(5, 0), (5, 2), (5, 2), (5, 5)])
    assert failure_histogram(counts, 5).tolist() == [1, 0, 0, 2, 0, 1]


def test_sub_pool_histogram_carries_exactly_pass_at_k_up_to_its_size():
    # pass@k of a pool of m samples with f failures, averaged over the expected histogram of
    # m-sample sub-pools, is pass@k of the whole pools for every k <= m.
    rng = np.random.default_rng(0)
    n, m = 16, 6
    counts = Counts.from_pairs([(n, int(c)) for c in rng.integers(0, n + 1, size=40)])
    histogram = failure_histogram(counts, m)
    assert histogram.sum() == pytest.approx(40)
    for k in range(1, m + 1):
        from_histogram = sum(
            h * (1 - math.comb(f, k) / math.comb(m, k)) for f, h in enumerate(histogram)
        )
        assert from_histogram / 40 == pytest.approx(coverage_curve(counts, [k]).coverage[0])


def test_a_bootstrap_replicate_keeps_the_number_of_questions():
    counts = Counts.from_pairs([(8, c) for c in (0, 1, 1, 3, 8, 8, 8)])
    replicate = counts.resample(np.random.default_rng(1))
    assert replicate.total == 7 and (replicate.n == counts.n).all()


def test_bad_counts_and_ks_are_refused():
    with pytest.raises(ValueError, match="right of"):
        Counts.from_pairs([(4, 5)])
    with pytest.raises(ValueError, match="no questions"):
        Counts.from_pairs([])
    with pytest.raises(ValueError, match="needs that many samples"):
        pass_at_k_table(Counts.from_pairs([(4, 1)]), [5])
    with pytest.raises(ValueError, match="must be in"):
        failure_histogram(Counts.from_pairs([(4, 1)]), 5)
