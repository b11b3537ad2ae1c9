"""The coverage laws recover known parameters from data drawn from them, and forecast held-out
k.

Tolerances, as the fits are asked to meet them on 500 questions x 100 samples with
(alpha, beta, A) drawn from alpha in [2, 20], beta in [0.2, 1], A in [0.8, 1] for each of 20
seeds: the median over seeds of estimate / truth is within 10% of 1 for maximum likelihood and
within 20% for least squares. The median absolute error is bounded too, looser for beta: at this
sample size the ceiling A and the tail exponent beta trade off through the questions that fail
every attempt, and over 200 draws the maximum-likelihood estimate's median absolute error is
8.6% for alpha, 11% for beta and 4.5% for A (least squares: 8.4%, 12%, 4.4%).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from inferscale.scaling import laws
from inferscale.scaling.coverage import Counts, coverage_curve, failure_histogram

QUESTIONS, SAMPLES = 500, 100


def levi_counts(rng, alpha, beta, ceiling, questions=QUESTIONS, samples=SAMPLES) -> Counts:
    """Failure probability p ~ Beta(alpha, beta) for a share `ceiling` of the questions, 1 for
    the rest; each question tries `samples` times."""
    p = rng.beta(alpha, beta, size=questions)
    p = np.where(rng.random(questions) < ceiling, p, 1.0)
    failures = rng.binomial(samples, p)
    return Counts.from_pairs((samples, samples - f) for f in failures)


@pytest.fixture(scope="module")
def recoveries():
    """(truth, MLE, least squares) as (alpha, beta, A) for 20 seeds."""
    out = []
    ks = list(range(1, SAMPLES + 1))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        truth = (rng.uniform(2, 20), rng.uniform(0.2, 1), rng.uniform(0.8, 1))
        counts = levi_counts(rng, *truth)
        mle = laws.fit_levi_mle(failure_histogram(counts, SAMPLES))
        lsq = laws.fit_levi_least_squares(ks, coverage_curve(counts, ks).coverage)
        out.append(
            (
                np.array(truth),
                np.array([mle.alpha, mle.beta, mle.ceiling]),
                np.array([lsq.alpha, lsq.beta, lsq.ceiling]),
            )
        )
    return out


def ratios(recoveries, which: int) -> np.ndarray:
    return np.array([r[which] / r[0] for r in recoveries])


def test_maximum_likelihood_recovers_levi_parameters(recoveries):
    ratio = ratios(recoveries, 1)
    assert np.abs(np.median(ratio, axis=0) - 1).max() <= 0.10, np.median(ratio, axis=0)
    assert (np.median(np.abs(ratio - 1), axis=0) <= [0.10, 0.15, 0.10]).all()


def test_least_squares_recovers_levi_parameters(recoveries):
    ratio = ratios(recoveries, 2)
    assert np.abs(np.median(ratio, axis=0) - 1).max() <= 0.20, np.median(ratio, axis=0)
    assert (np.median(np.abs(ratio - 1), axis=0) <= 0.20).all()


def test_maximum_likelihood_is_consistent_with_more_questions():
    rng = np.random.default_rng(7)
    counts = levi_counts(rng, 5.0, 0.4, 0.9, questions=20000)
    fit = laws.fit_levi_mle(failure_histogram(counts, SAMPLES))
    assert (fit.alpha, fit.beta, fit.ceiling) == pytest.approx((5.0, 0.4, 0.9), rel=0.04)


def test_beta_binomial_in_log_gamma_terms_equals_scipy():
    x = np.arange(0, 33)
    for alpha, beta in ((0.3, 2.0), (12.0, 0.25), (1.0, 1.0)):
        assert laws.beta_binomial_logpmf(x, 32, alpha, beta) == pytest.approx(
            stats.betabinom.logpmf(x, 32, alpha, beta), abs=1e-10
        )


def test_levi_pass_at_k_is_the_expectation_over_the_beta_and_decays_as_k_to_minus_beta():
    alpha, beta, ceiling = 4.0, 0.35, 0.9
    for k in (1, 7, 50):
        expected, _ = integrate.quad(
            lambda p, k=k: (1 - p**k) * stats.beta.pdf(p, alpha, beta), 0, 1, limit=200
        )
        assert laws.levi_pass_at_k(np.array([k]), alpha, beta, ceiling)[0] == pytest.approx(
            ceiling * expected, rel=1e-6
        )
    fit = laws.LeviFit(alpha, beta, ceiling, method="mle")
    k = 1e7  # log-gamma arithmetic: no overflow however large k is
    tail = 1 - fit.pass_at_k([k])[0] / ceiling
    assert tail == pytest.approx(fit.tail_prefactor * k**-beta, rel=1e-4)
    assert fit.tail_exponent == beta


def test_bootstrap_intervals_cover_the_estimate():
    rng = np.random.default_rng(3)
    counts = levi_counts(rng, 6.0, 0.5, 0.9, questions=300, samples=32)
    for fit in (
        laws.fit_levi_mle(failure_histogram(counts, 32)),
        laws.fit_levi_least_squares(range(1, 33), coverage_curve(counts, range(1, 33)).coverage),
    ):
        with_intervals = laws.bootstrap_levi(counts, fit, replicates=60, seed=0)
        for name, value in (("alpha", fit.alpha), ("beta", fit.beta), ("ceiling", fit.ceiling)):
            interval = with_intervals.intervals[name]
            assert interval.low <= value <= interval.high, (fit.method, name)
        assert with_intervals.intervals["beta"].high > with_intervals.intervals["beta"].low


def test_bootstrap_of_a_rarely_solved_set_counts_the_resamples_that_solve_nothing():
    """One question of 12 solved, once: a resample without it solves nothing, which is a
    ceiling of 0, not a failure of the analysis."""
    counts = Counts.from_pairs([(8, 1)] + [(8, 0)] * 11)
    for fit in (
        laws.fit_levi_mle(failure_histogram(counts, 8)),
        laws.fit_levi_least_squares(range(1, 9), coverage_curve(counts, range(1, 9)).coverage),
    ):
        with_intervals = laws.bootstrap_levi(counts, fit, replicates=40, seed=0)
        assert with_intervals.intervals["ceiling"].low == 0.0
        for name in ("alpha", "beta"):
            interval = with_intervals.intervals[name]
            assert np.isfinite(interval.low) and interval.low <= interval.high


def test_brown_recovers_its_own_curve():
    ks = [1, 2, 4, 8, 16, 32, 64]
    coverage = np.exp(-1.3 * np.power(ks, -0.45))
    fit = laws.fit_brown(ks, coverage)
    assert (fit.a, fit.b) == pytest.approx((-1.3, -0.45), rel=1e-6)
    assert fit.pass_at_k([3])[0] == pytest.approx(math.exp(-1.3 * 3**-0.45))


def schaeffer_counts(rng, alpha, beta, scale, questions=QUESTIONS, samples=SAMPLES) -> Counts:
    success = scale * rng.beta(alpha, beta, size=questions)
    return Counts.from_pairs((samples, int(x)) for x in rng.binomial(samples, success))


def test_schaeffer_reads_the_exponent_off_the_success_distribution():
    # The tail exponent is the success-side Beta's alpha; the scale, taken from the largest
    # observed success rate, is biased low when few questions come near it, so only the
    # exponent is held to a tolerance: median within 15% over 10 seeds.
    for alpha, beta, scale in ((0.4, 3.0, 0.8), (0.3, 1.5, 1.0)):
        estimates = [
            laws.fit_schaeffer(
                schaeffer_counts(np.random.default_rng(100 + s), alpha, beta, scale), SAMPLES
            ).exponent
            for s in range(10)
        ]
        assert np.median(estimates) == pytest.approx(alpha, rel=0.15)


def test_schaeffer_likelihood_matches_direct_integration():
    alpha, beta, scale, m = 0.6, 2.5, 0.7, 12
    successes = np.arange(m + 1, dtype=float)  # any weights: the likelihood is linear in them
    expected = 0.0
    for x, weight in enumerate(successes):
        pmf, _ = integrate.quad(
            lambda u, x=x: (
                math.comb(m, x)
                * (scale * u) ** x
                * (1 - scale * u) ** (m - x)
                * stats.beta.pdf(u, alpha, beta)
            ),
            0,
            1,
            limit=200,
        )
        expected -= weight * math.log(pmf)
    got = laws.schaeffer_neg_log_likelihood(alpha, beta, scale, successes)
    assert got == pytest.approx(expected, rel=1e-6)
    fit = laws.SchaefferFit(alpha, beta, scale)
    expected_pass, _ = integrate.quad(
        lambda u: (1 - (1 - scale * u) ** 40) * stats.beta.pdf(u, alpha, beta), 0, 1, limit=200
    )
    assert fit.pass_at_k([40])[0] == pytest.approx(expected_pass, rel=1e-8)


def merged(*counts: Counts) -> Counts:
    pairs = [
        (int(n), int(c))
        for part in counts
        for n, c, w in zip(part.n, part.c, part.questions, strict=True)
        for _ in range(int(w))
    ]
    return Counts.from_pairs(pairs)


def test_each_law_forecasts_held_out_k_of_data_drawn_from_levis_model():
    counts = levi_counts(np.random.default_rng(11), 5.0, 0.4, 0.95, questions=400, samples=32)
    forecasts = {law: laws.forecast(law, counts, 8) for law in laws.LAWS if law != "levi_by_level"}
    measured = coverage_curve(counts, [32]).coverage[0]
    for law, f in forecasts.items():
        assert f.ks == list(range(1, 33)) and f.fitted_up_to == 8
        assert f.measured[-1] == pytest.approx(measured)
        assert f.error_at_max == pytest.approx(f.predicted[-1] - measured)
        assert f.max_abs_error >= abs(f.error_at_max) and f.max_abs_error >= f.mean_abs_error
        assert abs(f.error_at_max) < 0.1, law
    # The model the data came from predicts best.
    assert abs(forecasts["levi_mle"].error_at_max) < 0.02
    with pytest.raises(laws.FitError, match="no difficulty levels"):
        laws.forecast("levi_by_level", counts, 8)


def test_a_beta_per_level_forecasts_a_mixture_of_levels_one_beta_cannot():
    # Easy questions failing rarely, hard ones mostly: two Betas far apart.
    rng = np.random.default_rng(5)
    easy = levi_counts(rng, 1.0, 3.0, 1.0, questions=200, samples=32)
    hard = levi_counts(rng, 8.0, 0.5, 0.9, questions=200, samples=32)
    counts = merged(easy, hard)
    strata = {"1": easy, "2": hard}
    by_level = laws.forecast("levi_by_level", counts, 8, strata)
    pooled = laws.forecast("levi_mle", counts, 8, strata)
    assert abs(by_level.error_at_max) < 0.02
    assert abs(by_level.error_at_max) < abs(pooled.error_at_max)
    fit = laws.fit_law("levi_by_level", counts, 32, strata)
    assert fit.weights == [0.5, 0.5]
    assert set(laws.law_parameters(fit)) == {
        f"{p}[{s}]" for p in ("alpha", "beta", "A") for s in ("1", "2")
    }
    with pytest.raises(ValueError, match="do not split"):
        laws.fit_law("levi_by_level", counts, 8, {"1": easy})


def test_fits_refuse_questions_never_solved():
    never = Counts.from_pairs([(8, 0)] * 10)
    for law in laws.LAWS:
        with pytest.raises(laws.FitError):
            laws.fit_law(law, never, 8)
    with pytest.raises(ValueError, match="hold k out"):
        laws.forecast("brown", Counts.from_pairs([(8, 3)]), 8)
    with pytest.raises(ValueError, match="unknown law"):
        laws.fit_law("chinchilla", Counts.from_pairs([(8, 3)]), 4)


def test_gamma_prefactor_matches_the_asymptote():
    fit = laws.LeviFit(3.0, 0.5, 1.0, method="mle")
    assert fit.tail_prefactor == pytest.approx(math.gamma(3.5) / math.gamma(3.0))
    assert special.gammaln(3.5) - special.gammaln(3.0) == pytest.approx(
        math.log(fit.tail_prefactor)
    )
