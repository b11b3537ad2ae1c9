"""The whole analysis of an experiment from its policies' evaluations."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from inferscale.analysis.comparisons import Comparison, summary_comparisons
from inferscale.analysis.coverage import PolicyCoverage, policy_coverage
from inferscale.analysis.evaluations import PolicyEvaluation
from inferscale.analysis.limits import PolicyLimits, policy_limits
from inferscale.analysis.optimal import ComputeOptimal, compute_optimal_choice
from inferscale.analysis.points import (
    ALL_LEVELS,
    compared_headline,
    headline,
    pareto_shares,
    points_table,
    policy_points,
)

ACCOUNTINGS = ("paper", "full")


@dataclass(frozen=True)
class AnalysisSettings:
    fit_fraction: float = 0.25  # laws are fitted on k <= this share of the pool to forecast
    bootstrap: int = 200  # resamples of the questions for intervals
    seed: int = 0
    easy_levels: tuple[int, ...] = (1, 2)
    flops_per_decade: int = 3  # budgets of the compute-optimal table

    @classmethod
    def of(cls, section) -> AnalysisSettings:
        """From the experiment config's `analysis` section."""
        return cls(
            fit_fraction=section.fit_fraction,
            bootstrap=section.bootstrap,
            seed=section.seed,
            easy_levels=tuple(section.easy_levels),
            flops_per_decade=section.flops_per_decade,
        )


@dataclass(frozen=True)
class ExperimentAnalysis:
    settings: AnalysisSettings
    table: pd.DataFrame
    evaluations: dict[str, PolicyEvaluation]
    coverages: list[PolicyCoverage]
    limits: list[PolicyLimits]
    optimal: dict[str, ComputeOptimal]  # per accounting, on every difficulty group
    optimal_by_group: dict[str, ComputeOptimal]  # per difficulty group, paper accounting
    comparisons: list[Comparison]

    def summary(self) -> dict:
        """The figures a reader wants first, JSON-ready."""
        return {
            "policies": headline(self.table),
            "compared": compared_headline(self.table),
            "pareto": pareto_shares(self.table),
            "greedy_accuracy_by_level": {
                name: e.metrics.greedy_accuracy_by_level for name, e in self.evaluations.items()
            },
            "compute_optimal": {a: o.summary() for a, o in self.optimal.items()},
            "compute_optimal_by_levels": {
                g: o.summary()["rows"] for g, o in self.optimal_by_group.items()
            },
            "coverage": {c.policy: c.summary() for c in self.coverages},
            "voting_limits": {lim.policy: lim.summary() for lim in self.limits},
            "comparisons": [{**asdict(c), "verdict": c.verdict} for c in self.comparisons],
        }


def points_of(evaluations: dict[str, PolicyEvaluation], settings: AnalysisSettings) -> pd.DataFrame:
    """Every point of every policy, question set and difficulty group."""
    return points_table(
        [
            policy_points(name, e.params, e.scores, settings.easy_levels)
            for name, e in evaluations.items()
        ]
    )


def analyze(
    evaluations: dict[str, PolicyEvaluation], settings: AnalysisSettings
) -> ExperimentAnalysis:
    table = points_of(evaluations, settings)
    coverages = [
        c
        for e in evaluations.values()
        if (
            c := policy_coverage(
                e, settings.fit_fraction, settings.bootstrap, settings.seed, settings.easy_levels
            )
        )
        is not None
    ]
    limits = [
        lim
        for e in evaluations.values()
        if (lim := policy_limits(e, table, settings.bootstrap, settings.seed)) is not None
    ]
    optimal = {
        accounting: compute_optimal_choice(
            table,
            evaluations,
            accounting,
            ALL_LEVELS,
            settings.easy_levels,
            settings.flops_per_decade,
        )
        for accounting in ACCOUNTINGS
    }
    by_group = {
        group: compute_optimal_choice(
            table, evaluations, "paper", group, settings.easy_levels, settings.flops_per_decade
        )
        for group in dict.fromkeys(table["levels"])
        if group != ALL_LEVELS
    }
    return ExperimentAnalysis(
        settings,
        table,
        evaluations,
        coverages,
        limits,
        optimal,
        by_group,
        summary_comparisons(evaluations),
    )
