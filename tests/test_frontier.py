"""The compute-optimal choice across model sizes: the frontier, the best choice within a
budget with its runner-up, and the fit of the optimal size against the budget."""

from __future__ import annotations

import math

import pytest

from inferscale.scaling.frontier import (
    BudgetError,
    Choice,
    best_within,
    check_budget,
    compute_optimal,
    fit_optimal_size,
    flops_grid,
    margin,
    pareto_front,
)


def choice(policy, strategy, budget, flops, error, params=None, stderr=0.02, accuracies=None):
    return Choice(
        policy=policy,
        params=params or {"S": 10, "M": 100, "L": 1000}[policy],
        strategy=strategy,
        budget=budget,
        flops=flops,
        error=error,
        stderr=stderr,
        questions=100,
        accuracies=accuracies,
    )


CHOICES = [
    choice("S", "greedy", 1, 1.0, 0.70),
    choice("S", "majority_vote", 4, 4.0, 0.60),
    choice("S", "rebase", 8, 6.0, 0.50),
    choice("L", "greedy", 1, 5.0, 0.55),
    choice("L", "majority_vote", 4, 20.0, 0.45),
    choice("L", "rebase", 8, 30.0, 0.47),
]


def test_frontier_spans_policies_and_drops_beaten_points():
    front = pareto_front(CHOICES)
    assert [(c.policy, c.strategy) for c in front] == [
        ("S", "greedy"),
        ("S", "majority_vote"),
        ("L", "greedy"),
        ("S", "rebase"),
        ("L", "majority_vote"),
    ]


def test_best_within_a_budget_with_runner_ups_one_per_pair():
    ranked = best_within(CHOICES, 10.0)
    assert [(c.policy, c.strategy) for c in ranked] == [
        ("S", "rebase"),
        ("L", "greedy"),
        ("S", "majority_vote"),
    ]
    assert [c.strategy for c in best_within(CHOICES, 1e9, top=2)] == ["majority_vote", "rebase"]
    # Exactly at a point's cost, it fits.
    assert best_within(CHOICES, 1.0)[0].strategy == "greedy"


def test_budgets_below_the_cheapest_point_or_not_a_number_are_refused():
    with pytest.raises(BudgetError, match="below the cheapest measured point, S greedy"):
        best_within(CHOICES, 0.5)
    for bad in (0, -3.0, math.nan, math.inf, "10"):
        with pytest.raises(BudgetError, match="positive number"):
            check_budget(bad)


def test_margin_is_paired_when_per_question_accuracies_are_known():
    best = choice("S", "rebase", 8, 6.0, 0.5, accuracies=(1, 1, 0, 0))
    other = choice("L", "greedy", 1, 5.0, 0.75, accuracies=(1, 0, 0, 0))
    m = margin(best, other)
    assert m.paired and m.difference == pytest.approx(0.25)
    assert m.stderr == pytest.approx(0.5 / 2)  # sd of (0, 1, 0, 0) is 0.5, over sqrt(4)
    unpaired = margin(choice("S", "a", 1, 1, 0.5, stderr=0.03), choice("S", "b", 1, 1, 0.6))
    assert not unpaired.paired and unpaired.stderr == pytest.approx(math.hypot(0.03, 0.02))


def test_compute_optimal_table_on_a_log_grid():
    grid = flops_grid(CHOICES, per_decade=2)
    assert grid[0] == 1.0 and grid[-1] == pytest.approx(30.0)
    assert all(b / a == pytest.approx(grid[1] / grid[0]) for a, b in zip(grid, grid[1:]))
    rows = compute_optimal(CHOICES, grid)
    assert rows[0].best.strategy == "greedy" and rows[0].runner_up is None
    assert rows[-1].best.pair == ("L", "majority_vote")
    assert rows[-1].runner_up.pair == ("L", "rebase")
    assert rows[-1].margin.difference == pytest.approx(0.02)


def test_optimal_size_fit_needs_three_sizes():
    rows = compute_optimal(CHOICES, flops_grid(CHOICES))
    two = fit_optimal_size(rows, [10, 1000])
    assert two.slope is None and "three or more" in two.reason
    # log10 C = 2 log10 N exactly: S best at 100, M at 1e4, L at 1e6.
    scaled = [
        choice("S", "greedy", 1, 100.0, 0.5),
        choice("M", "greedy", 1, 1e4, 0.4),
        choice("L", "greedy", 1, 1e6, 0.3),
    ]
    fit = fit_optimal_size(compute_optimal(scaled, [100.0, 1e4, 1e6]), [10, 100, 1000])
    assert (fit.slope, fit.intercept) == pytest.approx((2.0, 0.0))
    one = fit_optimal_size(compute_optimal(scaled, [100.0, 200.0]), [10, 100, 1000])
    assert one.slope is None and "every budget" in one.reason
