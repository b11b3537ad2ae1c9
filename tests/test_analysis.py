"""The points table over question sets and difficulty groups, the comparisons read off it, and
the printed summary."""

from __future__ import annotations

import pandas as pd
import pytest

from inferscale.analysis.comparisons import paired
from inferscale.analysis.points import (
    compared_headline,
    compared_points,
    headline,
    in_group,
    level_groups,
    pareto_shares,
    points_table,
    policy_points,
    question_sets,
    widest_points,
)
from inferscale.report.summary import format_summary
from inferscale.scores import QuestionScore, points_over

LEVELS = [1, 2, 3, 4, 5]


def score(qid, strategy, budget, accuracy, flops, level=None, coverage=None):
    return QuestionScore(
        id=qid,
        level=level,
        strategy=strategy,
        budget=budget,
        accuracy=accuracy,
        coverage=accuracy if coverage is None else coverage,
        flops_paper=flops,
        flops_full=2 * flops,
        tokens=10.0 * budget,
    )


def searched_on_fewer_questions() -> list[QuestionScore]:
    """10 questions, levels 1-5 twice over; REBASE ran on the first 4. At REBASE's cost the
    vote errs less than REBASE on all 10 questions but more on the 4 REBASE ran on."""
    scores = []
    for i in range(10):
        qid, level = f"q{i}", LEVELS[i % 5]
        searched = i < 4
        # One sample: right on 3 of the 10 questions, on none of the 4 searched.
        scores.append(score(qid, "greedy", 1, float(i in (5, 6, 7)), 1.0, level))
        scores.append(score(qid, "majority_vote", 1, float(i in (5, 6, 7)), 1.0, level))
        # 4 samples: right on 6 of the 10 questions, on 1 of the 4 searched.
        scores.append(score(qid, "majority_vote", 4, float(i in (0, 5, 6, 7, 8, 9)), 4.0, level))
        if searched:
            scores.append(score(qid, "rebase", 4, float(i in (0, 1)), 4.0, level, 1.0))
            scores.append(score(qid, "rebase", 8, float(i in (0,)), 6.0, level, 1.0))
    return scores


def table_of(scores, params=1000, easy=(1, 2)) -> pd.DataFrame:
    return points_table([policy_points("S", params, scores, easy)])


def test_question_sets_and_difficulty_groups():
    scores = searched_on_fewer_questions()
    sets = question_sets(scores)
    assert sets["all"] == {f"q{i}" for i in range(10)}
    assert sets["searched"] == {"q0", "q1", "q2", "q3"}
    groups = level_groups(scores, easy_levels=(1, 2))
    assert list(groups) == ["all", "1", "2", "3", "4", "5", "easy", "hard"]
    assert groups["easy"] == {"q0", "q1", "q5", "q6"} and groups["3"] == {"q2", "q7"}
    # Without levels there is one group.
    plain = [score("a", "greedy", 1, 1.0, 1.0), score("b", "greedy", 1, 0.0, 1.0)]
    assert list(level_groups(plain, (1, 2))) == ["all"]


def test_points_average_each_group_and_set_and_match_the_evaluations_own():
    scores = searched_on_fewer_questions()
    table = table_of(scores)
    everything = in_group(table)
    evaluated = points_over(scores, question_sets(scores)["all"], "all")
    on_all = everything[everything.question_set == "all"]
    assert list(on_all.accuracy) == [p.accuracy for p in evaluated]
    assert "rebase" not in set(on_all.strategy)  # it did not run on every question
    hard = in_group(table, "hard")
    majority = hard[(hard.strategy == "majority_vote") & (hard.budget == 4)]
    # hard questions: levels 3-5, q2 q3 q4 q7 q8 q9; right at 4 samples: q7 q8 q9
    on = majority[majority.question_set == "all"].iloc[0]
    assert (on.questions, on.accuracy) == (6, 0.5)
    with pytest.raises(ValueError, match="no points for levels 'medium'"):
        in_group(table, "medium")


def test_strategies_are_compared_on_the_questions_all_of_them_ran():
    table = in_group(table_of(searched_on_fewer_questions()))
    compared = compared_points(table)
    assert set(compared["question_set"]) == {"searched"} and len(compared) == 5
    # (FLOPs, error) on the 4 searched: greedy and majority@1 (1, 1.0), majority@4 (4, 0.75),
    # rebase@4 (4, 0.5), rebase@8 (6, 0.75); on all 10 majority@4 would be (4, 0.4) and beat
    # rebase@4.
    assert pareto_shares(table_of(searched_on_fewer_questions())) == {
        "S": {"greedy": 1.0, "majority_vote": 0.5, "rebase": 0.5}
    }
    assert set(widest_points(table)["question_set"]) == {"all"}


def test_no_question_set_with_every_strategy_is_an_error():
    scores = [
        score("a", "greedy", 1, 1.0, 1.0),
        score("b", "greedy", 1, 1.0, 1.0),
        score("a", "rebase", 4, 1.0, 3.0),
    ]
    table = pd.DataFrame(
        [
            {**row, "question_set": "all" if row["strategy"] == "greedy" else "searched"}
            for row in in_group(table_of(scores)).to_dict("records")
            if row["question_set"] == ("all" if row["strategy"] == "greedy" else "searched")
        ]
    )
    with pytest.raises(ValueError, match="no question set has points of every strategy"):
        compared_points(table)


def test_headline_takes_each_strategy_on_the_most_questions_it_ran():
    row = headline(table_of(searched_on_fewer_questions()))["S"]
    assert row["params"] == 1000 and row["questions"] == 10
    assert row["strategies"]["majority_vote"]["budget"] == 4
    assert row["strategies"]["majority_vote"]["questions"] == 10
    assert row["strategies"]["majority_vote"]["error"] == pytest.approx(0.4)
    assert row["strategies"]["greedy"]["error"] == pytest.approx(0.7)
    assert row["strategies"]["rebase"] == {
        "budget": 8,
        "error": pytest.approx(0.75),
        "stderr": pytest.approx(0.25),
        "coverage": 1.0,
        "questions": 4,
    }


def test_compared_headline_takes_every_strategy_on_the_shared_questions():
    row = compared_headline(table_of(searched_on_fewer_questions()))["S"]
    assert (row["questions"], row["of"]) == (4, 10)
    assert {s: top["error"] for s, top in row["strategies"].items()} == {
        "greedy": pytest.approx(1.0),
        "majority_vote": pytest.approx(0.75),
        "rebase": pytest.approx(0.75),
    }


def test_paired_comparison_is_on_the_shared_questions():
    scores = searched_on_fewer_questions()
    rebase = [s for s in scores if s.strategy == "rebase" and s.budget == 4]
    majority = [s for s in scores if s.strategy == "majority_vote" and s.budget == 4]
    c = paired("rebase against majority", rebase, majority)
    assert c.questions == 4
    assert (c.error, c.baseline_error) == (0.5, 0.75)
    # accuracy differences majority - rebase per question: q1 -1, others 0
    assert c.difference == pytest.approx(-0.25)
    assert c.stderr == pytest.approx(0.25)
    assert c.verdict == "within noise"


def summary_of(scores) -> dict:
    table = table_of(scores)
    return {
        "experiment": "x",
        "policies": headline(table),
        "greedy_accuracy_by_level": {"S": {"1": 0.5}},
        "pareto": pareto_shares(table),
        "compared": compared_headline(table),
        "comparisons": [],
    }


def test_summary_prints_the_strategies_on_the_questions_all_of_them_ran(tmp_path):
    text = format_summary(summary_of(searched_on_fewer_questions()), tmp_path)
    assert (
        "S on the 4 questions every strategy ran: greedy 1.000 ± 0.000  "
        "majority vote (4 samples) 0.750 ± 0.250  REBASE (8 width) 0.750 ± 0.250" in text
    )
    assert (
        "S: share of budgets on the error-vs-FLOPs Pareto front "
        "(on the 4 questions every strategy ran): REBASE 0.50" in text
    )
    assert "S (0.00M parameters): greedy 0.700 ± 0.153  majority vote (4 samples) 0.400" in text
    assert "pass@4 0.600" in text
    assert str(tmp_path / "report.html") in text


def test_summary_of_one_question_set_prints_no_second_line(tmp_path):
    scores = [
        score(f"q{i}", s, 1, float(i % 2), 1.0) for i in range(4) for s in ("greedy", "rebase")
    ]
    text = format_summary(summary_of(scores), tmp_path)
    assert "questions every strategy ran:" not in text
    assert "Pareto front (on the 4 questions every strategy ran): REBASE 1.00" in text


def test_summary_prints_the_prm_against_exact_validity_where_the_task_has_it(tmp_path):
    scores = [score(f"q{i}", "greedy", 1, float(i % 2), 1.0) for i in range(4)]
    prm = {"step_auc": 0.812, "bon_last_accuracy": 0.22, "bon_random_accuracy": 0.2}
    exact = {
        "step_auc_exact": 0.809,
        "label_agreement": {"steps": 1600, "agree": 1424, "rate": 0.89},
    }
    plain = format_summary(summary_of(scores) | {"prm": prm}, tmp_path)
    assert "PRM on held-out labelled steps: step AUC 0.812; best-of-n" in plain
    text = format_summary(summary_of(scores) | {"prm": prm | exact}, tmp_path)
    assert (
        "step AUC 0.812 (against exact validity 0.809; the labels agree with it on 89.0% of "
        "steps); best-of-n picks a right solution last 0.220, random 0.200" in text
    )
    one_class = prm | {"step_auc_exact": None, "label_agreement": {"steps": 0, "rate": None}}
    assert "(against exact validity n/a)" in format_summary(
        summary_of(scores) | {"prm": one_class}, tmp_path
    )
