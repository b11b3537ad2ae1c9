"""The report's comparisons: the Pareto front, which question set strategies are compared on,
the headline numbers and the printed summary."""

from __future__ import annotations

import pandas as pd
import pytest

from inferscale.analysis import (
    compared_headline,
    compared_points,
    headline,
    on_pareto_front,
    pareto_shares,
    points_table,
    widest_points,
)
from inferscale.cli import format_summary


def test_pareto_front_keeps_points_no_other_point_beats():
    flops = [1.0, 2.0, 2.0, 3.0, 4.0, 4.0]
    errors = [0.5, 0.4, 0.45, 0.4, 0.1, 0.1]
    # (2, 0.45) is beaten by (2, 0.4) at equal cost; (3, 0.4) by (2, 0.4) at equal error; the
    # two equal points at 4 do not beat each other.
    assert on_pareto_front(flops, errors) == [True, True, False, False, True, True]
    assert on_pareto_front([1.0], [0.3]) == [True]


def point(strategy, budget, accuracy, flops, question_set="all", questions=300, coverage=None):
    return {
        "strategy": strategy,
        "budget": budget,
        "accuracy": accuracy,
        "stderr": 0.01,
        "coverage": accuracy if coverage is None else coverage,
        "flops_paper": flops,
        "flops_full": 2 * flops,
        "tokens": 10.0 * budget,
        "question_set": question_set,
        "questions": questions,
    }


def searched_on_fewer_questions() -> pd.DataFrame:
    """At REBASE's cost, the vote errs less than REBASE on all 300 questions but more on the 80
    REBASE ran on."""
    points = [
        point("greedy", 1, 0.30, 1.0),
        point("majority_vote", 1, 0.30, 1.0),
        point("majority_vote", 4, 0.50, 4.0),
        point("greedy", 1, 0.30, 1.0, "searched", 80),
        point("majority_vote", 1, 0.30, 1.0, "searched", 80),
        point("majority_vote", 4, 0.40, 4.0, "searched", 80),
        point("rebase", 4, 0.45, 4.0, "searched", 80, coverage=0.7),
        point("rebase", 8, 0.40, 6.0, "searched", 80, coverage=0.8),
    ]
    return points_table({"S": {"params": 1000, "points": points}})


def test_strategies_are_compared_on_the_questions_all_of_them_ran():
    table = searched_on_fewer_questions()
    compared = compared_points(table)
    assert set(compared["question_set"]) == {"searched"} and len(compared) == 5
    # (FLOPs, error): rebase@4 (4, 0.55) beats majority@4 on the searched questions (4, 0.60),
    # and would lose to it on all of them (4, 0.50); rebase@8 (6, 0.60) is beaten either way.
    assert pareto_shares(table) == {"S": {"greedy": 1.0, "majority_vote": 0.5, "rebase": 0.5}}
    assert set(widest_points(table)["question_set"]) == {"all"}


def test_one_question_set_is_compared_as_it_is():
    points = [
        point("greedy", 1, 0.30, 1.0, questions=16),
        point("rebase", 4, 0.80, 3.0, questions=16),
    ]
    table = points_table({"S": {"params": 1000, "points": points}})
    assert compared_points(table).index.equals(table.index)
    assert widest_points(table).index.equals(table.index)
    assert pareto_shares(table) == {"S": {"greedy": 1.0, "rebase": 1.0}}


def test_no_question_set_with_every_strategy_is_an_error():
    points = [
        point("greedy", 1, 0.30, 1.0, "all", 300),
        point("rebase", 4, 0.45, 3.0, "searched", 80),
    ]
    table = points_table({"S": {"params": 1000, "points": points}})
    with pytest.raises(ValueError, match="no question set has points of every strategy"):
        compared_points(table)


def test_headline_takes_each_strategy_on_the_most_questions_it_ran():
    row = headline(searched_on_fewer_questions())["S"]
    assert row == {
        "params": 1000,
        "greedy_error": pytest.approx(0.70),
        "majority_vote@4_error": pytest.approx(0.50),  # all 300 questions, not the 80
        "pass@4": pytest.approx(0.50),
        "rebase@8_error": pytest.approx(0.60),
        "pass@8": pytest.approx(0.80),
    }


def test_compared_headline_takes_every_strategy_on_the_shared_questions():
    assert compared_headline(searched_on_fewer_questions()) == {
        "S": {
            "questions": 80,
            "of": 300,
            "greedy": pytest.approx(0.70),
            "majority_vote@4": pytest.approx(0.60),
            "rebase@8": pytest.approx(0.60),
        }
    }


def summary_of(table: pd.DataFrame) -> dict:
    return {
        "experiment": "x",
        "policies": headline(table),
        "greedy_accuracy_by_level": {"S": {"1": 0.5}},
        "pareto": pareto_shares(table),
        "compared": compared_headline(table),
    }


def test_summary_prints_the_strategies_on_the_questions_all_of_them_ran(tmp_path):
    text = format_summary(summary_of(searched_on_fewer_questions()), tmp_path)
    assert (
        "S on the 80 questions every strategy ran: "
        "greedy 0.700  majority_vote@4 0.600  rebase@8 0.600" in text
    )
    assert (
        "S: share of budgets on the error-vs-FLOPs Pareto front "
        "(on the 80 questions every strategy ran): rebase 0.50" in text
    )


def test_summary_of_one_question_set_prints_no_second_line(tmp_path):
    points = [
        point("greedy", 1, 0.30, 1.0, questions=16),
        point("rebase", 4, 0.80, 3.0, questions=16),
    ]
    text = format_summary(
        summary_of(points_table({"S": {"params": 1, "points": points}})), tmp_path
    )
    assert "questions every strategy ran:" not in text
    assert "Pareto front (on the 16 questions every strategy ran): rebase 1.00" in text
