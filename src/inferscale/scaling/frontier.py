"""The compute-optimal choice across model sizes: for a FLOPs budget, which (policy, strategy,
budget) errs least among the measured points that cost no more, how sure that is against the
runner-up, the error-vs-FLOPs frontier over all of them, and (Wu et al. Sec. 4) the fit
log10(C) = a log10(N) + b of the optimal model size N against the budget C.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class BudgetError(ValueError):
    """A FLOPs budget no measured point fits in, or no budget at all."""


@dataclass(frozen=True)
class Choice:
    """One measured point. `accuracies` (per question, in one order shared by every choice of a
    comparison) make comparisons paired; without them they are independent."""

    policy: str
    params: int
    strategy: str
    budget: int
    flops: float
    error: float
    stderr: float
    questions: int
    accuracies: tuple[float, ...] | None = None

    @property
    def pair(self) -> tuple[str, str]:
        return self.policy, self.strategy


@dataclass(frozen=True)
class Margin:
    """How much more the runner-up errs than the best, with the standard error of that."""

    difference: float
    stderr: float
    paired: bool


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of a - b over paired questions, and its standard error (0 for one question)."""
    deltas = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    stderr = float(deltas.std(ddof=1) / math.sqrt(len(deltas))) if len(deltas) > 1 else 0.0
    return float(deltas.mean()), stderr


def beyond_noise(difference: float, stderr: float) -> bool:
    """Whether a difference is more than two standard errors from zero (any nonzero
    difference when there is no error at all)."""
    return abs(difference) > 2 * stderr if stderr > 0 else difference != 0


def margin(best: Choice, other: Choice) -> Margin:
    """other's error minus best's; paired over questions when both carry their accuracies."""
    difference = other.error - best.error
    if (
        best.accuracies is not None
        and other.accuracies is not None
        and len(best.accuracies) == len(other.accuracies)
        and len(best.accuracies) > 1
    ):
        _, stderr = paired_difference(best.accuracies, other.accuracies)
        return Margin(difference, stderr, paired=True)
    return Margin(difference, math.hypot(best.stderr, other.stderr), paired=False)


def on_pareto_front(flops: Sequence[float], errors: Sequence[float]) -> list[bool]:
    """Whether each point is Pareto-optimal: no other point costs no more and errs no more, and
    strictly less in one of the two."""
    points = list(zip(flops, errors, strict=True))
    return [
        not any(
            f2 <= f and e2 <= e and (f2 < f or e2 < e)
            for j, (f2, e2) in enumerate(points)
            if j != i
        )
        for i, (f, e) in enumerate(points)
    ]


def pareto_front(choices: Sequence[Choice]) -> list[Choice]:
    """The choices on the error-vs-FLOPs Pareto front, cheapest first."""
    mask = on_pareto_front([c.flops for c in choices], [c.error for c in choices])
    front = [c for c, on in zip(choices, mask, strict=True) if on]
    return sorted(front, key=lambda c: (c.flops, c.error))


def check_budget(flops: float) -> float:
    if not isinstance(flops, int | float) or not math.isfinite(flops) or flops <= 0:
        raise BudgetError(f"a FLOPs budget must be a positive number, got {flops!r}")
    return float(flops)


def best_within(choices: Sequence[Choice], flops: float, top: int = 3) -> list[Choice]:
    """The `top` lowest-error choices that cost at most `flops` per question, one per (policy,
    strategy) (its best budget that fits), best first; ties go to the cheaper."""
    flops = check_budget(flops)
    if not choices:
        raise BudgetError("no measured points to choose from")
    cheapest = min(choices, key=lambda c: c.flops)
    if flops < cheapest.flops:
        raise BudgetError(
            f"{flops:.3g} FLOPs per question is below the cheapest measured point, "
            f"{cheapest.policy} {cheapest.strategy} at {cheapest.flops:.3g}: give at least that"
        )
    best_per_pair: dict[tuple[str, str], Choice] = {}
    for c in sorted(choices, key=lambda c: (c.error, c.flops)):
        if c.flops <= flops:
            best_per_pair.setdefault(c.pair, c)
    return sorted(best_per_pair.values(), key=lambda c: (c.error, c.flops))[:top]


def flops_grid(choices: Sequence[Choice], per_decade: int = 3) -> list[float]:
    """Budgets log-spaced from the cheapest point to the dearest, both included."""
    low = min(c.flops for c in choices)
    high = max(c.flops for c in choices)
    if high <= low:
        return [low]
    steps = max(1, math.ceil(per_decade * math.log10(high / low)))
    return [float(x) for x in np.geomspace(low, high, steps + 1)]


@dataclass(frozen=True)
class OptimalRow:
    flops: float  # the budget
    best: Choice
    runner_up: Choice | None
    margin: Margin | None  # runner_up's error minus best's


def compute_optimal(choices: Sequence[Choice], budgets: Sequence[float]) -> list[OptimalRow]:
    rows = []
    for flops in budgets:
        ranked = best_within(choices, flops, top=2)
        runner_up = ranked[1] if len(ranked) > 1 else None
        rows.append(
            OptimalRow(
                flops=flops,
                best=ranked[0],
                runner_up=runner_up,
                margin=margin(ranked[0], runner_up) if runner_up is not None else None,
            )
        )
    return rows


@dataclass(frozen=True)
class SizeFit:
    """log10(C) = slope log10(N) + intercept over the budgets C of the table, N their optimal
    model size; None fields with a reason when it cannot be fitted."""

    slope: float | None
    intercept: float | None
    sizes: int  # distinct policy sizes measured
    reason: str = ""


def fit_optimal_size(rows: Sequence[OptimalRow], sizes: Sequence[int]) -> SizeFit:
    distinct = sorted(set(sizes))
    if len(distinct) < 3:
        return SizeFit(
            None,
            None,
            len(distinct),
            f"{len(distinct)} model size(s) measured: the fit of the optimal size against the "
            "budget needs three or more",
        )
    optimal = {r.best.params for r in rows}
    if len(optimal) < 2:
        return SizeFit(
            None,
            None,
            len(distinct),
            f"one size ({next(iter(optimal)):.3g} parameters) is optimal at every budget",
        )
    log_n = np.log10([r.best.params for r in rows])
    log_c = np.log10([r.flops for r in rows])
    slope, intercept = np.polyfit(log_n, log_c, 1)
    return SizeFit(float(slope), float(intercept), len(distinct))
