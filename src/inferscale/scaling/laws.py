"""Laws of coverage against the number of attempts k, their fits, and how well each predicts.

- Levi (arXiv 2410.16377, Sec. 3): a question's probability of failing one attempt is
  p ~ Beta(alpha, beta), and a share 1 - A of questions is never solved, so
  pass@k = A (1 - B(alpha + k, beta) / B(alpha, beta)); for large k,
  1 - pass@k / A ~ Gamma(alpha + beta) / Gamma(alpha) k^-beta: beta is the tail exponent.
  Fitted by maximum likelihood of the per-question failure counts (a zero-inflated
  beta-binomial) and by least squares on the pass@k curve.
- Levi by stratum: the same model fitted by maximum likelihood within each known difficulty
  stratum (a level), mixed by the strata's shares: questions of several difficulties make a
  mixture of Betas, which one Beta fits poorly when the levels sit far apart.
- Brown et al. (Large Language Monkeys): coverage c(k) = exp(a k^b), a, b < 0, fitted on
  log-spaced k. (The same family as the least-squares power law on -log pass@k that Schaeffer
  et al. compare their estimator with.)
- Schaeffer et al. (arXiv 2502.17578): the distribution of single-attempt success
  probabilities, a Beta(alpha, beta) scaled to [0, c] with c = min(1, (Q + 1) / Q max_i c_i/n_i)
  over Q questions, fitted by maximum likelihood of the success counts; near 0 its density
  behaves as s^(alpha - 1), so -log pass@k decays as k^-alpha: alpha is the exponent.

All in log-gamma arithmetic, so k may run to thousands.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import optimize, special

from inferscale.scaling.coverage import (
    Counts,
    coverage_curve,
    failure_histogram,
    failure_rows,
    pass_at_k_table,
)
from inferscale.scaling.subsets import budgets_up_to

# Parameters are searched in log space within these bounds (and A in [_MIN_CEILING, 1]).
_LOG_BOUNDS = (math.log(1e-3), math.log(1e4))
_MIN_CEILING = 1e-3


class FitError(ValueError):
    """Data a law cannot be fitted to (say, no question ever solved)."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class LeviFit:
    alpha: float
    beta: float
    ceiling: float  # A: the share of questions that can be solved at all
    method: str  # "mle" or "least_squares"
    intervals: dict[str, Interval] = field(default_factory=dict)  # bootstrap, per parameter

    def pass_at_k(self, k: Sequence[float] | np.ndarray) -> np.ndarray:
        return levi_pass_at_k(np.asarray(k, dtype=float), self.alpha, self.beta, self.ceiling)

    @property
    def tail_exponent(self) -> float:
        return self.beta

    @property
    def tail_prefactor(self) -> float:
        """C in 1 - pass@k / A ~ C k^-beta for large k."""
        return math.exp(special.gammaln(self.alpha + self.beta) - special.gammaln(self.alpha))


def levi_pass_at_k(k: np.ndarray, alpha: float, beta: float, ceiling: float) -> np.ndarray:
    """A (1 - B(alpha + k, beta) / B(alpha, beta)): A times one minus E[p^k], p ~ Beta."""
    k = np.asarray(k, dtype=float)
    return ceiling * -np.expm1(special.betaln(alpha + k, beta) - special.betaln(alpha, beta))


def beta_binomial_logpmf(x: np.ndarray, n: int, alpha: float, beta: float) -> np.ndarray:
    """log P(x | n) of a beta-binomial, as scipy.stats.betabinom.logpmf, in log-gamma terms."""
    x = np.asarray(x, dtype=float)
    return (
        special.gammaln(n + 1)
        - special.gammaln(x + 1)
        - special.gammaln(n - x + 1)
        + special.betaln(x + alpha, n - x + beta)
        - special.betaln(alpha, beta)
    )


def levi_neg_log_likelihood(
    alpha: float, beta: float, ceiling: float, histogram: np.ndarray
) -> float:
    """-log likelihood of `histogram` (questions failing f = 0..m of m attempts) under the
    zero-inflated beta-binomial: a question is solvable with probability A, and then fails
    f times out of m with p ~ Beta(alpha, beta); otherwise it fails all m."""
    x = np.array([math.log(alpha), math.log(beta), ceiling])
    return _levi_nll_and_gradient(x, histogram)[0]


def _levi_nll_and_gradient(x: np.ndarray, histogram: np.ndarray) -> tuple[float, np.ndarray]:
    """The negative log likelihood and its gradient in (log alpha, log beta, A)."""
    alpha, beta, ceiling = _unpack(x)
    m = len(histogram) - 1
    f = np.arange(m + 1)
    pmf = np.exp(beta_binomial_logpmf(f, m, alpha, beta))
    likelihood = ceiling * pmf
    likelihood[m] += 1.0 - ceiling
    used = histogram > 0
    h, like = histogram[used], likelihood[used]
    common = special.digamma(alpha + beta) - special.digamma(m + alpha + beta)
    d_alpha = special.digamma(f + alpha) - special.digamma(alpha) + common
    d_beta = special.digamma(m - f + beta) - special.digamma(beta) + common
    never = (f == m).astype(float)
    weight = -h / like
    gradient = np.array(
        [
            weight @ (ceiling * pmf * d_alpha)[used] * alpha,
            weight @ (ceiling * pmf * d_beta)[used] * beta,
            weight @ (pmf - never)[used],
        ]
    )
    return float(-(h @ np.log(like))), gradient


def _levi_squares_and_gradient(
    x: np.ndarray, ks: np.ndarray, target: np.ndarray
) -> tuple[float, np.ndarray]:
    """The sum of squared pass@k residuals and its gradient in (log alpha, log beta, A)."""
    alpha, beta, ceiling = _unpack(x)
    ratio = np.exp(special.betaln(alpha + ks, beta) - special.betaln(alpha, beta))
    residual = ceiling * (1.0 - ratio) - target
    common = special.digamma(alpha + beta) - special.digamma(alpha + beta + ks)
    d_alpha = ratio * (special.digamma(alpha + ks) - special.digamma(alpha) + common)
    d_beta = ratio * common
    gradient = 2.0 * np.array(
        [
            residual @ (-ceiling * d_alpha) * alpha,
            residual @ (-ceiling * d_beta) * beta,
            residual @ (1.0 - ratio),
        ]
    )
    return float(residual @ residual), gradient


def _starts(start: LeviFit | None) -> list[np.ndarray]:
    """Where the optimiser starts: from a known fit alone (a bootstrap refit), else a grid."""
    if start is not None:
        return [np.array([math.log(start.alpha), math.log(start.beta), start.ceiling])]
    grid = [(a, b) for a in (1.0, 5.0, 20.0) for b in (0.3, 1.0)]
    return [np.array([math.log(a), math.log(b), 0.95]) for a, b in grid]


def _unpack(x: np.ndarray) -> tuple[float, float, float]:
    return math.exp(x[0]), math.exp(x[1]), float(x[2])


_BOUNDS = [_LOG_BOUNDS, _LOG_BOUNDS, (_MIN_CEILING, 1.0)]


def _best(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]], starts: list[np.ndarray]
) -> np.ndarray:
    best = None
    for x0 in starts:
        result = optimize.minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=_BOUNDS)
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    return best.x


def fit_levi_mle(histogram: np.ndarray, start: LeviFit | None = None) -> LeviFit:
    """Levi's model by maximum likelihood of a failure histogram (see `failure_histogram`)."""
    m = len(histogram) - 1
    if histogram[:m].sum() <= 0:
        raise FitError("no question was ever solved: nothing to fit")
    x = _best(lambda x: _levi_nll_and_gradient(x, histogram), _starts(start))
    return LeviFit(*_unpack(x), method="mle")


def fit_levi_least_squares(
    ks: Sequence[int], coverage: Sequence[float], start: LeviFit | None = None
) -> LeviFit:
    """Levi's model by least squares on the measured pass@k curve."""
    ks_arr, target = np.asarray(ks, dtype=float), np.asarray(coverage, dtype=float)
    if not target.any():
        raise FitError("coverage is 0 at every k: nothing to fit")
    x = _best(lambda x: _levi_squares_and_gradient(x, ks_arr, target), _starts(start))
    return LeviFit(*_unpack(x), method="least_squares")


@dataclass(frozen=True)
class StratifiedFit:
    """Levi's model per stratum, mixed by the strata's shares of the questions; a stratum
    never solved (fit None) contributes nothing."""

    labels: list[str]
    weights: list[float]
    fits: list[LeviFit | None]

    def pass_at_k(self, k: Sequence[float] | np.ndarray) -> np.ndarray:
        k = np.asarray(k, dtype=float)
        total = np.zeros(k.shape)
        for weight, fit in zip(self.weights, self.fits, strict=True):
            if fit is not None:
                total += weight * fit.pass_at_k(k)
        return total


def fit_levi_by_stratum(strata: dict[str, Counts], m: int) -> StratifiedFit:
    """Levi's model by maximum likelihood within each stratum, on m-sample pools."""
    if len(strata) < 2:
        raise FitError("fitting per stratum needs two strata (difficulty levels) or more")
    total = sum(c.total for c in strata.values())
    fits: list[LeviFit | None] = []
    for counts in strata.values():
        try:
            fits.append(fit_levi_mle(failure_histogram(counts, m)))
        except FitError:
            fits.append(None)
    if all(f is None for f in fits):
        raise FitError("no question was ever solved: nothing to fit")
    return StratifiedFit(list(strata), [c.total / total for c in strata.values()], fits)


@dataclass(frozen=True)
class BrownFit:
    """Coverage c(k) = exp(a k^b)."""

    a: float
    b: float

    def pass_at_k(self, k: Sequence[float] | np.ndarray) -> np.ndarray:
        return np.exp(self.a * np.power(np.asarray(k, dtype=float), self.b))


def brown_coverage(k: np.ndarray, a: float, b: float) -> np.ndarray:
    return np.exp(a * np.power(k, b))


def fit_brown(ks: Sequence[int], coverage: Sequence[float]) -> BrownFit:
    """curve_fit of exp(a k^b) to coverage at (log-spaced) ks, started from the straight line
    that log(-log c) makes against log k."""
    k = np.asarray(ks, dtype=float)
    c = np.asarray(coverage, dtype=float)
    usable = (c > 0) & (c < 1)
    if usable.sum() < 2:
        raise FitError("need coverage strictly between 0 and 1 at two k or more")
    slope, intercept = np.polyfit(np.log(k[usable]), np.log(-np.log(c[usable])), 1)
    p0 = (-math.exp(intercept), slope)
    try:
        (a, b), _ = optimize.curve_fit(brown_coverage, k, c, p0=p0, maxfev=20000)
    except RuntimeError as err:  # no convergence: the straight line is the fit
        raise FitError(f"exp(a k^b) did not converge: {err}") from None
    return BrownFit(float(a), float(b))


@dataclass(frozen=True)
class SchaefferFit:
    """Success probabilities s = scale x u, u ~ Beta(alpha, beta); exponent = alpha."""

    alpha: float
    beta: float
    scale: float

    @property
    def exponent(self) -> float:
        return self.alpha

    def pass_at_k(self, k: Sequence[float] | np.ndarray) -> np.ndarray:
        ks = np.atleast_1d(np.asarray(k, dtype=int))
        u, weights = _jacobi_rule(self.alpha, self.beta, int(ks.max()) // 2 + 2)
        failures = np.power.outer(1.0 - self.scale * u, ks)  # (nodes, ks)
        return 1.0 - weights @ failures


def _jacobi_rule(alpha: float, beta: float, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes u in (0, 1) and weights w with sum w g(u) = E[g(u)], u ~ Beta(alpha, beta), exact
    for polynomials g of degree < 2 nodes (Gauss-Jacobi)."""
    x, w = special.roots_jacobi(nodes, beta - 1.0, alpha - 1.0)
    return (1.0 + x) / 2.0, w / w.sum()


def schaeffer_neg_log_likelihood(
    alpha: float, beta: float, scale: float, successes: np.ndarray
) -> float:
    """-log likelihood of `successes` (questions with x = 0..m right of m attempts) under the
    scaled beta-binomial."""
    m = len(successes) - 1
    u, weights = _jacobi_rule(alpha, beta, m // 2 + 2)
    x = np.arange(m + 1)
    s = scale * u[:, None]
    with np.errstate(divide="ignore"):
        log_terms = x * np.log(s) + (m - x) * np.log1p(-s)
    log_terms = np.where(np.isnan(log_terms), -np.inf, log_terms)
    # log C(m, x) + log E[s^x (1 - s)^(m - x)]
    log_pmf = (
        special.gammaln(m + 1)
        - special.gammaln(x + 1)
        - special.gammaln(m - x + 1)
        + special.logsumexp(log_terms, axis=0, b=weights[:, None])
    )
    used = successes > 0
    return float(-(successes[used] @ log_pmf[used]))


def fit_schaeffer(counts: Counts, m: int) -> SchaefferFit:
    """The scaled Beta by maximum likelihood of success counts in m attempts per question."""
    successes = failure_histogram(counts, m)[::-1]
    top = float(np.max(counts.c / counts.n))
    if top == 0:
        raise FitError("no question was ever solved: nothing to fit")
    questions = counts.total
    scale = min(1.0, (questions + 1) / questions * top)
    bounds = [(math.log(0.01), math.log(100.0))] * 2
    best = None
    for a0, b0 in ((0.35, 3.5), (1.0, 1.0), (0.2, 0.5)):
        result = optimize.minimize(
            lambda x: schaeffer_neg_log_likelihood(*np.exp(x), scale, successes),
            np.log([a0, b0]),
            method="L-BFGS-B",
            bounds=bounds,
        )
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    alpha, beta = np.exp(best.x)
    return SchaefferFit(float(alpha), float(beta), scale)


def bootstrap_levi(
    counts: Counts, fit: LeviFit, replicates: int, seed: int, level: float = 0.95
) -> LeviFit:
    """`fit` with percentile intervals from refits on `replicates` resamples of the questions
    (each refit starts from `fit`).

    Where few questions are ever solved, a resample may hold none of them: its pass@k is 0 at
    every k, a ceiling of 0 with no alpha or beta. It counts in the ceiling's interval as 0
    and is left out of those of alpha and beta."""
    rng = np.random.default_rng(seed)
    m = counts.min_samples
    ks = list(range(1, m + 1))
    # A replicate only reweighs the groups of questions: what each group contributes is fixed.
    rows = failure_rows(counts, m) if fit.method == "mle" else pass_at_k_table(counts, ks)
    draws = []
    for _ in range(replicates):
        weights = counts.resample(rng).questions
        try:
            if fit.method == "mle":
                refit = fit_levi_mle(weights @ rows, start=fit)
            else:
                refit = fit_levi_least_squares(ks, weights @ rows / weights.sum(), start=fit)
        except FitError:
            draws.append((np.nan, np.nan, 0.0))
            continue
        draws.append((refit.alpha, refit.beta, refit.ceiling))
    low, high = np.nanquantile(np.array(draws), [(1 - level) / 2, (1 + level) / 2], axis=0)
    names = ("alpha", "beta", "ceiling")
    bounds = zip(names, low, high, strict=True)
    return replace(fit, intervals={n: Interval(float(lo), float(hi)) for n, lo, hi in bounds})


@dataclass(frozen=True)
class Forecast:
    """A law fitted on k <= fitted_up_to, its prediction at every k, and its errors on the
    held-out k (prediction minus measured pass@k)."""

    law: str
    fitted_up_to: int
    ks: list[int]
    predicted: list[float]
    measured: list[float]
    measured_stderr: list[float]
    parameters: dict[str, float]
    error_at_max: float  # at the largest k
    max_abs_error: float  # over the held-out k
    mean_abs_error: float


LAWS = ("levi_mle", "levi_least_squares", "levi_by_level", "brown", "schaeffer")
LAW_LABELS = {
    "levi_mle": "Levi, maximum likelihood",
    "levi_by_level": "Levi, a Beta per difficulty level",
    "levi_least_squares": "Levi, least squares",
    "brown": "Brown et al., exp(a k^b)",
    "schaeffer": "Schaeffer et al., distributional",
}


def fit_law(law: str, counts: Counts, k_max: int, strata: dict[str, Counts] | None = None):
    """One law fitted on what pass@1..k_max says: the failure counts of k_max-sample pools
    for the likelihoods, the curve up to k_max for the curve fits. `strata` split the
    questions of `counts` by difficulty level, for the law fitted per level."""
    ks = list(range(1, k_max + 1))
    if law == "levi_mle":
        return fit_levi_mle(failure_histogram(counts, k_max))
    if law == "levi_by_level":
        if not strata:
            raise FitError("the questions have no difficulty levels")
        if sum(c.total for c in strata.values()) != counts.total:
            raise ValueError("the strata do not split the questions")
        return fit_levi_by_stratum(strata, k_max)
    if law == "levi_least_squares":
        return fit_levi_least_squares(ks, coverage_curve(counts, ks).coverage)
    if law == "brown":
        spaced = budgets_up_to(k_max)
        return fit_brown(spaced, coverage_curve(counts, spaced).coverage)
    if law == "schaeffer":
        return fit_schaeffer(counts, k_max)
    raise ValueError(f"unknown law {law!r}; known: {LAWS}")


def law_parameters(fit) -> dict[str, float]:
    if isinstance(fit, LeviFit):
        return {"alpha": fit.alpha, "beta": fit.beta, "A": fit.ceiling}
    if isinstance(fit, StratifiedFit):
        return {
            f"{name}[{label}]": value
            for label, f in zip(fit.labels, fit.fits, strict=True)
            if f is not None
            for name, value in law_parameters(f).items()
        }
    if isinstance(fit, BrownFit):
        return {"a": fit.a, "b": fit.b}
    return {"alpha": fit.alpha, "beta": fit.beta, "scale": fit.scale}


def forecast(
    law: str, counts: Counts, fitted_up_to: int, strata: dict[str, Counts] | None = None
) -> Forecast:
    """Fit `law` on k <= fitted_up_to and compare its prediction with pass@k up to the pool."""
    pool = counts.min_samples
    if not 1 <= fitted_up_to < pool:
        raise ValueError(f"fit on k <= {fitted_up_to}: must be in 1..{pool - 1} to hold k out")
    fit = fit_law(law, counts, fitted_up_to, strata)
    ks = list(range(1, pool + 1))
    measured = coverage_curve(counts, ks)
    predicted = np.asarray(fit.pass_at_k(ks), dtype=float)
    held_out = np.array(ks) > fitted_up_to
    errors = predicted - measured.coverage
    return Forecast(
        law=law,
        fitted_up_to=fitted_up_to,
        ks=ks,
        predicted=predicted.tolist(),
        measured=measured.coverage.tolist(),
        measured_stderr=measured.stderr.tolist(),
        parameters=law_parameters(fit),
        error_at_max=float(errors[-1]),
        max_abs_error=float(np.abs(errors[held_out]).max()),
        mean_abs_error=float(np.abs(errors[held_out]).mean()),
    )
