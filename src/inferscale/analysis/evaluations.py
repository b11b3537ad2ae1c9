"""One policy's finished evaluation, read back typed: its metrics, per-question scores, pools
and the PRM's score of every pool sample."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inferscale.evaluation import read_pool_prm_scores, read_pools, solution_score
from inferscale.scores import (
    EvaluationMetrics,
    PoolRecord,
    QuestionScore,
    read_metrics,
    read_scores,
)
from inferscale.search.registry import STRATEGIES
from inferscale.search.tree import Aggregation


@dataclass(frozen=True)
class PolicyEvaluation:
    name: str
    metrics: EvaluationMetrics
    scores: list[QuestionScore]
    pools: list[PoolRecord]  # empty when no strategy votes over a pool
    # Each pool sample's score, as the weighted vote aggregates its PRM step scores, by
    # question id; empty when no pool strategy reads the PRM.
    sample_scores: dict[str, list[float]]

    @property
    def params(self) -> int:
        return self.metrics.params


def load_evaluation(
    name: str, directory: Path, pool_size: int, aggregation: Aggregation
) -> PolicyEvaluation:
    metrics = read_metrics(directory)
    strategies = {p.strategy for p in metrics.points}
    pools = (
        read_pools(directory, pool_size)
        if any(STRATEGIES[s].kind == "pool" for s in strategies)
        else []
    )
    sample_scores = {}
    if any(STRATEGIES[s].kind == "pool" and STRATEGIES[s].needs_prm for s in strategies):
        sample_scores = {
            qid: [solution_score(steps, aggregation) for steps in per_sample]
            for qid, per_sample in read_pool_prm_scores(directory, pool_size).items()
        }
    return PolicyEvaluation(name, metrics, read_scores(directory), pools, sample_scores)


def load_evaluations(
    directories: dict[str, Path], required: list[str], pool_size: int, aggregation: Aggregation
) -> dict[str, PolicyEvaluation]:
    """The evaluations of the `required` policies from their finished `directories`; a
    ValueError naming the first policy that has none."""
    missing = [name for name in required if name not in directories]
    if missing:
        raise ValueError(
            f"policy {missing[0]} has no finished evaluation; run the experiment first"
        )
    return {
        name: load_evaluation(name, directories[name], pool_size, aggregation) for name in required
    }
