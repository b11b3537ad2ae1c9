"""A policy's coverage: pass@k over its pool at every k, what k samples cost, every law fitted
to it, and how well each law predicts the larger k it was not fitted on; per difficulty group
too."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from inferscale.analysis.evaluations import PolicyEvaluation
from inferscale.analysis.points import is_level, level_groups
from inferscale.compute import pool_flops
from inferscale.scaling import laws
from inferscale.scaling.coverage import Counts, CoverageCurve, coverage_curve, failure_histogram


@dataclass(frozen=True)
class GroupCoverage:
    levels: str
    questions: int
    curve: CoverageCurve
    levi: laws.LeviFit | None  # maximum likelihood; None when nothing was solved


@dataclass(frozen=True)
class PolicyCoverage:
    policy: str
    params: int
    curve: CoverageCurve  # every question, k = 1..pool
    flops: dict[str, list[float]]  # per accounting, the expected FLOPs of k samples
    fits: dict[str, object]  # law -> its fit on every k (Levi's with bootstrap intervals)
    forecasts: dict[str, laws.Forecast]  # law -> fitted on k <= fitted_up_to
    fitted_up_to: int
    groups: list[GroupCoverage]  # per difficulty group

    def summary(self) -> dict:
        """What the summary file keeps: the fits and each law's held-out errors."""
        return {
            "pool": int(self.curve.ks[-1]),
            "questions": self.curve.questions,
            "pass_at_pool": float(self.curve.coverage[-1]),
            "pass_at_pool_stderr": float(self.curve.stderr[-1]),
            "fits": {law: fit_summary(fit) for law, fit in self.fits.items()},
            "forecasts": {
                law: {
                    "fitted_up_to": f.fitted_up_to,
                    "predicted_at_pool": f.predicted[-1],
                    "error_at_pool": f.error_at_max,
                    "max_abs_error": f.max_abs_error,
                    "mean_abs_error": f.mean_abs_error,
                }
                for law, f in self.forecasts.items()
            },
        }


def fit_summary(fit) -> dict:
    out: dict = dict(laws.law_parameters(fit))
    if isinstance(fit, laws.LeviFit):
        out["tail_exponent"] = fit.tail_exponent
        out["intervals"] = {name: asdict(i) for name, i in fit.intervals.items()}
    if isinstance(fit, laws.SchaefferFit):
        out["exponent"] = fit.exponent
    return out


def policy_coverage(
    evaluation: PolicyEvaluation,
    fit_fraction: float,
    bootstrap: int,
    seed: int,
    easy_levels: Sequence[int],
) -> PolicyCoverage | None:
    """None when the policy has no pool of samples."""
    pools = evaluation.pools
    if not pools:
        return None
    counts = Counts.from_pairs((p.size, p.correct) for p in pools)
    pool = counts.min_samples
    ks = list(range(1, pool + 1))
    cost, paper_params = evaluation.metrics.cost, evaluation.metrics.paper_params
    flops = {
        accounting: [
            statistics.fmean(
                pool_flops(cost, p.prompt_tokens, p.sample_tokens, k, accounting, paper_params)
                for p in pools
            )
            for k in ks
        ]
        for accounting in ("paper", "full")
    }
    by_id = {p.id: p for p in pools}
    groups = level_groups(evaluation.scores, easy_levels)
    strata = {
        levels: Counts.from_pairs((by_id[i].size, by_id[i].correct) for i in ids if i in by_id)
        for levels, ids in groups.items()
        if is_level(levels) and any(i in by_id for i in ids)
    }
    fits: dict[str, object] = {}
    for law in laws.LAWS:
        try:
            fit = laws.fit_law(law, counts, pool, strata)
        except laws.FitError:
            continue
        if isinstance(fit, laws.LeviFit) and bootstrap:
            fit = laws.bootstrap_levi(counts, fit, bootstrap, seed)
        fits[law] = fit
    fitted_up_to = max(1, int(pool * fit_fraction))
    forecasts = {}
    if fitted_up_to < pool:
        for law in laws.LAWS:
            try:
                forecasts[law] = laws.forecast(law, counts, fitted_up_to, strata)
            except laws.FitError:
                continue
    coverage_groups = []
    for levels, ids in groups.items():
        members = [by_id[i] for i in ids if i in by_id]
        if not members:
            continue
        group_counts = Counts.from_pairs((p.size, p.correct) for p in members)
        try:
            levi = laws.fit_levi_mle(failure_histogram(group_counts, pool))
        except laws.FitError:
            levi = None
        coverage_groups.append(
            GroupCoverage(levels, len(members), coverage_curve(group_counts, ks), levi)
        )
    return PolicyCoverage(
        policy=evaluation.name,
        params=evaluation.params,
        curve=coverage_curve(counts, ks),
        flops=flops,
        fits=fits,
        forecasts=forecasts,
        fitted_up_to=fitted_up_to,
        groups=coverage_groups,
    )
