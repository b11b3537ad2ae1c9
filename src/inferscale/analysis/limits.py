"""Each policy's voting limits (Wu et al., Theorems 1-2) and how far each budget of its votes
is from them."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from inferscale.analysis.evaluations import PolicyEvaluation
from inferscale.analysis.points import ALL_LEVELS
from inferscale.evaluation import ALL
from inferscale.scaling.subsets import QuestionPool
from inferscale.scaling.voting_limits import Limit, voting_limit

# The vote whose limit each voting strategy approaches.
LIMITED = {"majority_vote": "majority", "weighted_vote": "weighted"}


@dataclass(frozen=True)
class PolicyLimits:
    policy: str
    limits: dict[str, Limit]  # by strategy
    # by strategy: (budget, accuracy, stderr, limit minus accuracy) on every question
    gaps: dict[str, list[tuple[int, float, float, float]]]

    def summary(self) -> dict:
        return {
            strategy: {
                "limit": limit.accuracy,
                "low": limit.low,
                "high": limit.high,
                "questions": limit.questions,
                "gap_by_budget": {str(b): gap for b, _, _, gap in self.gaps[strategy]},
            }
            for strategy, limit in self.limits.items()
        }


def policy_limits(
    evaluation: PolicyEvaluation, table: pd.DataFrame, replicates: int, seed: int
) -> PolicyLimits | None:
    """None when the policy runs neither vote."""
    points = table[
        (table["policy"] == evaluation.name)
        & (table["question_set"] == ALL)
        & (table["levels"] == ALL_LEVELS)
    ]
    limits, gaps = {}, {}
    for strategy, vote in LIMITED.items():
        curve = points[points["strategy"] == strategy].sort_values("budget")
        if curve.empty:
            continue
        pools = [
            QuestionPool(
                p.classes,
                p.correct_classes,
                evaluation.sample_scores[p.id] if vote == "weighted" else None,
            )
            for p in evaluation.pools
        ]
        limit = voting_limit(pools, vote, replicates, seed)
        limits[strategy] = limit
        gaps[strategy] = [
            (int(r.budget), float(r.accuracy), float(r.stderr), limit.accuracy - float(r.accuracy))
            for r in curve.itertuples()
        ]
    return PolicyLimits(evaluation.name, limits, gaps) if limits else None
