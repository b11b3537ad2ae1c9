"""The compute-optimal choice across the experiment's model sizes, read off its measured
points: the frontier, the best (policy, strategy, budget) at each FLOPs budget with its
runner-up, and the fit of the optimal model size against the budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from inferscale.analysis.evaluations import PolicyEvaluation
from inferscale.analysis.points import (
    ALL_LEVELS,
    compared_points,
    in_group,
    level_groups,
    question_sets,
)
from inferscale.scaling.frontier import (
    Choice,
    OptimalRow,
    SizeFit,
    best_within,
    compute_optimal,
    fit_optimal_size,
    flops_grid,
    pareto_front,
)


def choices(
    table: pd.DataFrame,
    evaluations: dict[str, PolicyEvaluation],
    accounting: str,
    levels: str = ALL_LEVELS,
    easy_levels: Sequence[int] = (),
) -> list[Choice]:
    """Every policy's points on the questions all its strategies ran (in one difficulty
    group), with per-question accuracies when every policy ran the same questions, so that
    comparisons across them are paired."""
    compared = compared_points(in_group(table, levels))
    ids = {}
    for policy, rows in compared.groupby("policy", sort=False):
        scores = evaluations[str(policy)].scores
        question_set = rows["question_set"].iloc[0]
        group = level_groups(scores, easy_levels).get(levels, set())
        ids[str(policy)] = question_sets(scores)[question_set] & group
    shared = len({frozenset(v) for v in ids.values()}) == 1
    out = []
    for row in compared.itertuples():
        accuracies = None
        if shared:
            order = sorted(ids[row.policy])
            by_id = {
                s.id: s.accuracy
                for s in evaluations[row.policy].scores
                if s.strategy == row.strategy and s.budget == row.budget
            }
            accuracies = tuple(by_id[i] for i in order)
        out.append(
            Choice(
                policy=row.policy,
                params=int(row.params),
                strategy=row.strategy,
                budget=int(row.budget),
                flops=float(getattr(row, f"flops_{accounting}")),
                error=float(row.error_rate),
                stderr=float(row.stderr),
                questions=int(row.questions),
                accuracies=accuracies,
            )
        )
    return out


@dataclass(frozen=True)
class ComputeOptimal:
    accounting: str
    levels: str
    questions: int
    options: list[Choice]  # every point compared
    rows: list[OptimalRow]
    front: list[Choice]
    size_fit: SizeFit

    def summary(self) -> dict:
        def brief(c: Choice | None) -> dict | None:
            if c is None:
                return None
            return {
                "policy": c.policy,
                "params": c.params,
                "strategy": c.strategy,
                "budget": c.budget,
                "flops": c.flops,
                "error": c.error,
                "stderr": c.stderr,
            }

        return {
            "accounting": self.accounting,
            "levels": self.levels,
            "questions": self.questions,
            "rows": [
                {
                    "flops": r.flops,
                    "best": brief(r.best),
                    "runner_up": brief(r.runner_up),
                    "margin": None
                    if r.margin is None
                    else {
                        "difference": r.margin.difference,
                        "stderr": r.margin.stderr,
                        "paired": r.margin.paired,
                    },
                }
                for r in self.rows
            ],
            "front": [brief(c) for c in self.front],
            "size_fit": {
                "slope": self.size_fit.slope,
                "intercept": self.size_fit.intercept,
                "sizes": self.size_fit.sizes,
                "reason": self.size_fit.reason,
            },
        }


def compute_optimal_choice(
    table: pd.DataFrame,
    evaluations: dict[str, PolicyEvaluation],
    accounting: str,
    levels: str = ALL_LEVELS,
    easy_levels: Sequence[int] = (),
    per_decade: int = 3,
) -> ComputeOptimal:
    options = choices(table, evaluations, accounting, levels, easy_levels)
    rows = compute_optimal(options, flops_grid(options, per_decade))
    sizes = [e.params for e in evaluations.values()]
    return ComputeOptimal(
        accounting=accounting,
        levels=levels,
        questions=min(c.questions for c in options),
        options=options,
        rows=rows,
        front=pareto_front(options),
        size_fit=fit_optimal_size(rows, sizes),
    )


def plan(
    table: pd.DataFrame,
    evaluations: dict[str, PolicyEvaluation],
    flops: float,
    accounting: str,
    levels: str = ALL_LEVELS,
    easy_levels: Sequence[int] = (),
    top: int = 3,
) -> list[Choice]:
    """The best choices within `flops` per question, best first (see `best_within`)."""
    return best_within(choices(table, evaluations, accounting, levels, easy_levels), flops, top)
