"""The table of every (policy, question set, difficulty group, strategy, budget) point and the
comparisons read off it: which question set strategies are compared on, each strategy's
headline error, and each policy's error-vs-FLOPs Pareto front.

A point's `question_set` is `all` (every evaluated question) or `searched` (the questions the
tree searches ran on, when that is fewer); its `levels` is `all`, one level, `easy` or `hard`,
and the point averages the questions in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import pandas as pd

from inferscale.evaluation import ALL, SEARCHED
from inferscale.scaling.frontier import on_pareto_front
from inferscale.scores import QuestionScore, points_over
from inferscale.search.registry import STRATEGIES

ALL_LEVELS = "all"
EASY = "easy"
HARD = "hard"
COLUMNS = [
    "policy",
    "params",
    "question_set",
    "levels",
    "questions",
    "strategy",
    "budget",
    "accuracy",
    "error_rate",
    "stderr",
    "coverage",
    "flops_paper",
    "flops_full",
    "tokens",
]


def question_sets(scores: Sequence[QuestionScore]) -> dict[str, set[str]]:
    """`all`: every question scored; `searched`: those the tree searches ran on, when fewer."""
    every = {s.id for s in scores}
    searched = {s.id for s in scores if STRATEGIES[s.strategy].kind == "tree"}
    sets = {ALL: every}
    if searched and searched != every:
        sets[SEARCHED] = searched
    return sets


def level_groups(scores: Sequence[QuestionScore], easy_levels: Sequence[int]) -> dict[str, set]:
    """`all`, then each level, then easy (`easy_levels`) and hard (the rest) when both exist:
    the question ids of each group."""
    levels: dict[int, set[str]] = {}
    for s in scores:
        if s.level is not None:
            levels.setdefault(s.level, set()).add(s.id)
    groups = {ALL_LEVELS: {s.id for s in scores}}
    if len(levels) < 2:
        return groups
    for level in sorted(levels):
        groups[str(level)] = levels[level]
    easy = set().union(*(ids for level, ids in levels.items() if level in easy_levels))
    hard = set().union(*(ids for level, ids in levels.items() if level not in easy_levels))
    if easy and hard:
        groups[EASY], groups[HARD] = easy, hard
    return groups


def is_level(group: str) -> bool:
    """Whether a difficulty group is one level (not all of them, easy or hard)."""
    return group not in (ALL_LEVELS, EASY, HARD)


def policy_points(
    policy: str, params: int, scores: Sequence[QuestionScore], easy_levels: Sequence[int]
) -> pd.DataFrame:
    """Every point of one policy's evaluation, on each question set and difficulty group."""
    rows = []
    groups = level_groups(scores, easy_levels)
    for question_set, ids in question_sets(scores).items():
        for levels, group in groups.items():
            for p in points_over(scores, ids & group, question_set):
                rows.append({"policy": policy, "params": params, "levels": levels, **asdict(p)})
    table = pd.DataFrame(rows)
    table["error_rate"] = 1.0 - table["accuracy"]
    return table[COLUMNS]


def points_table(per_policy: Sequence[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(per_policy, ignore_index=True)[COLUMNS]


def in_group(table: pd.DataFrame, levels: str = ALL_LEVELS) -> pd.DataFrame:
    """The points of one difficulty group."""
    group = table[table["levels"] == levels]
    if group.empty:
        known = sorted(set(table["levels"]))
        raise ValueError(f"no points for levels {levels!r}; the experiment has {known}")
    return group


def compared_points(table: pd.DataFrame) -> pd.DataFrame:
    """Per policy, the points of the largest question set that every one of its strategies
    ran: what comparisons across strategies (Pareto front, plot) are made on."""
    kept = []
    for policy, group in table.groupby("policy", sort=False):
        strategies = set(group["strategy"])
        shared = [
            (int(rows["questions"].max()), name)
            for name, rows in group.groupby("question_set")
            if set(rows["strategy"]) == strategies
        ]
        if not shared:
            raise ValueError(
                f"no question set has points of every strategy of policy {policy}: "
                f"{sorted(strategies)}"
            )
        kept.append(group[group["question_set"] == max(shared)[1]])
    return pd.concat(kept)


def _on_most_questions(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    most = table.groupby(by, sort=False)["questions"].transform("max")
    return table[table["questions"] == most]


def widest_points(table: pd.DataFrame) -> pd.DataFrame:
    """Per policy, the points on its largest question set (the strategies that ran on it)."""
    return _on_most_questions(table, ["policy"])


def own_points(table: pd.DataFrame) -> pd.DataFrame:
    """Each (policy, strategy)'s points on the most questions it ran: its own best estimate."""
    return _on_most_questions(table, ["policy", "strategy"])


def _top(points: pd.DataFrame) -> dict:
    top = points.sort_values("budget").iloc[-1]
    return {
        "budget": int(top.budget),
        "error": float(top.error_rate),
        "stderr": float(top.stderr),
        "coverage": float(top.coverage),
        "questions": int(top.questions),
    }


def headline(table: pd.DataFrame) -> dict[str, dict]:
    """Per policy, each strategy at its largest budget, each on the most questions it ran."""
    out = {}
    for policy, group in own_points(in_group(table)).groupby("policy", sort=False):
        out[str(policy)] = {
            "params": int(group["params"].iloc[0]),
            "questions": int(group["questions"].max()),
            "strategies": {
                str(strategy): _top(points)
                for strategy, points in group.groupby("strategy", sort=False)
            },
        }
    return out


def compared_headline(table: pd.DataFrame) -> dict[str, dict]:
    """Per policy, each strategy at its largest budget on the question set the strategies are
    compared on (see `compared_points`): `questions` of the `of` evaluated."""
    group = in_group(table)
    evaluated = group.groupby("policy", sort=False)["questions"].max()
    out = {}
    for policy, points in compared_points(group).groupby("policy", sort=False):
        out[str(policy)] = {
            "questions": int(points["questions"].iloc[0]),
            "of": int(evaluated[policy]),
            "strategies": {
                str(strategy): _top(rows)
                for strategy, rows in points.groupby("strategy", sort=False)
            },
        }
    return out


def pareto_shares(table: pd.DataFrame, accounting: str = "paper") -> dict[str, dict[str, float]]:
    """Per policy and strategy: the share of the strategy's budgets whose point lies on the
    policy's error-vs-FLOPs Pareto front over all its strategies, all on one question set (see
    `compared_points`)."""
    out: dict[str, dict[str, float]] = {}
    for policy, group in compared_points(in_group(table)).groupby("policy", sort=False):
        front = on_pareto_front(list(group[f"flops_{accounting}"]), list(group["error_rate"]))
        shares = pd.Series(front, index=group.index).groupby(group["strategy"], sort=False).mean()
        out[str(policy)] = {str(k): float(v) for k, v in shares.items()}
    return out
