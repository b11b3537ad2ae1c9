"""The comparisons the summary states, each as a difference of error rates on the same
questions with its paired standard error, so that a difference inside the noise reads as such:
each vote against greedy decoding or majority vote, and the larger policy against the
smaller."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inferscale.analysis.evaluations import PolicyEvaluation
from inferscale.scaling.frontier import beyond_noise, paired_difference
from inferscale.scores import QuestionScore
from inferscale.search.registry import STRATEGIES


@dataclass(frozen=True)
class Comparison:
    what: str  # e.g. "S: majority vote (32 samples) against greedy"
    error: float  # the first's error
    baseline_error: float
    difference: float  # error minus baseline_error
    stderr: float  # paired over the shared questions
    questions: int

    @property
    def verdict(self) -> str:
        if not beyond_noise(self.difference, self.stderr):
            return "within noise"
        return "lower" if self.difference < 0 else "higher"


def paired(
    what: str, scores: list[QuestionScore], baseline: list[QuestionScore]
) -> Comparison | None:
    """Error of `scores` against `baseline` on the questions both scored; None if none."""
    mine = {s.id: s.accuracy for s in scores}
    theirs = {s.id: s.accuracy for s in baseline}
    shared = sorted(mine.keys() & theirs.keys())
    if not shared:
        return None
    # The baseline's accuracy minus mine is my error minus the baseline's.
    difference, stderr = paired_difference([theirs[i] for i in shared], [mine[i] for i in shared])
    error = 1 - float(np.mean([mine[i] for i in shared]))
    baseline_error = 1 - float(np.mean([theirs[i] for i in shared]))
    return Comparison(what, error, baseline_error, difference, stderr, len(shared))


def _largest(scores: list[QuestionScore], strategy: str) -> list[QuestionScore]:
    mine = [s for s in scores if s.strategy == strategy]
    top = max((s.budget for s in mine), default=None)
    return [s for s in mine if s.budget == top]


def _name(scores: list[QuestionScore]) -> str:
    s = scores[0]
    return STRATEGIES[s.strategy].budget_label(s.budget)


def summary_comparisons(evaluations: dict[str, PolicyEvaluation]) -> list[Comparison]:
    out = []
    for name, ev in evaluations.items():
        greedy = _largest(ev.scores, "greedy")
        majority = _largest(ev.scores, "majority_vote")
        for strategy, baseline in (
            ("majority_vote", greedy),
            ("weighted_vote", majority),
            ("best_of_n", majority),
            ("rebase", majority),
        ):
            mine = _largest(ev.scores, strategy)
            if mine and baseline:
                what = f"{name}: {_name(mine)} against {_name(baseline)}"
                c = paired(what, mine, baseline)
                if c is not None:
                    out.append(c)
    by_size = sorted(evaluations.values(), key=lambda ev: ev.params)
    if len(by_size) >= 2:
        small, large = by_size[0], by_size[-1]
        a, b = _largest(large.scores, "greedy"), _largest(small.scores, "greedy")
        if a and b:
            c = paired(f"greedy: {large.name} against {small.name}", a, b)
            if c is not None:
                out.append(c)
    return out
