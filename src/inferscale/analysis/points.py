"""Scaling curves: the table of all (policy, strategy, budget) points and error rate vs FLOPs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines that run this
import matplotlib.pyplot as plt
import pandas as pd

MARKERS = {
    "greedy": "*",
    "majority_vote": "o",
    "weighted_vote": "^",
    "best_of_n": "v",
    "rebase": "D",
    "mcts": "P",
    "beam_search": "X",
}


def points_table(evaluations: dict[str, dict]) -> pd.DataFrame:
    """One row per (policy, question set, strategy, budget) from each policy's evaluation."""
    rows = [
        {"policy": policy, "params": metrics["params"], **point}
        for policy, metrics in evaluations.items()
        for point in metrics["points"]
    ]
    table = pd.DataFrame(rows)
    table["error_rate"] = 1.0 - table["accuracy"]
    order = ["policy", "params", "question_set", "questions", "strategy", "budget", "accuracy"]
    order += ["error_rate", "stderr"]
    return table[order + [c for c in table.columns if c not in order]]


def compared_points(table: pd.DataFrame) -> pd.DataFrame:
    """Per policy, the points of the largest question set that every one of its strategies
    ran: what comparisons across strategies (Pareto front, plot) are made on."""
    kept = []
    for _, group in table.groupby("policy", sort=False):
        strategies = set(group["strategy"])
        sets = group.groupby("question_set")
        shared = [
            (int(rows["questions"].iloc[0]), name)
            for name, rows in sets
            if set(rows["strategy"]) == strategies
        ]
        if not shared:
            raise ValueError(
                f"no question set has points of every strategy of policy "
                f"{group['policy'].iloc[0]}: {sorted(strategies)}"
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


def plot_error_vs_flops(table: pd.DataFrame, path: Path, accounting: str = "paper") -> Path:
    """Error rate against FLOPs per question (log x), one line per (policy, strategy); the
    title says how many questions each policy's points average over."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    counts = table.groupby("policy", sort=False)["questions"].unique()
    ax.set_title(
        "questions per point: "
        + ", ".join(f"{p} {'/'.join(str(int(n)) for n in ns)}" for p, ns in counts.items()),
        fontsize=9,
    )
    for (policy, strategy), group in table.groupby(["policy", "strategy"], sort=False):
        group = group.sort_values("budget")
        ax.errorbar(
            group[f"flops_{accounting}"],
            group["error_rate"],
            yerr=group["stderr"],
            marker=MARKERS.get(strategy, "s"),
            markersize=8 if strategy == "greedy" else 5,
            capsize=2,
            label=f"{policy} ({group['params'].iloc[0] / 1e6:.2g}M) {strategy}",
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"inference FLOPs per question ({accounting} accounting)")
    ax.set_ylabel("error rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def headline(table: pd.DataFrame) -> dict:
    """The checks a reader wants first: greedy error per policy and each strategy at its largest
    budget, each on the most questions it ran."""
    out = {}
    for policy, group in own_points(table).groupby("policy", sort=False):
        greedy = group[group.strategy == "greedy"]
        row = {"params": int(group["params"].iloc[0])}
        if not greedy.empty:
            row["greedy_error"] = float(greedy["error_rate"].iloc[0])
        for strategy, votes in group[group.strategy != "greedy"].groupby("strategy"):
            top = votes.sort_values("budget").iloc[-1]
            row[f"{strategy}@{int(top.budget)}_error"] = float(top["error_rate"])
            row[f"pass@{int(top.budget)}"] = float(top["coverage"])
        out[policy] = row
    return out


def compared_headline(table: pd.DataFrame) -> dict[str, dict]:
    """Per policy, the error of each strategy at its largest budget on the question set the
    strategies are compared on (see `compared_points`): `questions` of the `of` evaluated."""
    out = {}
    evaluated = table.groupby("policy", sort=False)["questions"].max()
    for policy, group in compared_points(table).groupby("policy", sort=False):
        row: dict = {"questions": int(group["questions"].iloc[0]), "of": int(evaluated[policy])}
        for strategy, points in group.groupby("strategy", sort=False):
            top = points.sort_values("budget").iloc[-1]
            key = strategy if strategy == "greedy" else f"{strategy}@{int(top.budget)}"
            row[key] = float(top["error_rate"])
        out[str(policy)] = row
    return out


def on_pareto_front(flops: list[float], errors: list[float]) -> list[bool]:
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


def pareto_shares(table: pd.DataFrame, accounting: str = "paper") -> dict[str, dict[str, float]]:
    """Per policy and strategy: the share of the strategy's budgets whose point lies on the
    policy's error-vs-FLOPs Pareto front over all its strategies, all on one question set (see
    `compared_points`)."""
    out: dict[str, dict[str, float]] = {}
    for policy, group in compared_points(table).groupby("policy", sort=False):
        front = on_pareto_front(list(group[f"flops_{accounting}"]), list(group["error_rate"]))
        shares = pd.Series(front, index=group.index).groupby(group["strategy"], sort=False).mean()
        out[str(policy)] = {str(k): float(v) for k, v in shares.items()}
    return out
