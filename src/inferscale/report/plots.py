"""The report's figures. Every strategy has one colour and one marker in every figure (in the
registry's order), every policy one colour where policies share a figure; legends sit outside
the axes; quantities that span decades are drawn on log axes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the machines that run this
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from inferscale.analysis.coverage import PolicyCoverage
from inferscale.analysis.limits import PolicyLimits
from inferscale.analysis.points import (
    ALL_LEVELS,
    EASY,
    HARD,
    compared_points,
    in_group,
    is_level,
)
from inferscale.scaling import laws
from inferscale.scaling.frontier import Choice
from inferscale.search.registry import STRATEGIES

STRATEGY_COLOURS = dict(zip(STRATEGIES, plt.get_cmap("tab10").colors, strict=False))
POLICY_COLOURS = plt.get_cmap("Dark2").colors
LAW_COLOURS = dict(zip(laws.LAWS, plt.get_cmap("Set1").colors, strict=False))
DPI = 110


def policy_colour(index: int):
    return POLICY_COLOURS[index % len(POLICY_COLOURS)]


def flops_label(accounting: str) -> str:
    return f"inference FLOPs per question ({accounting} accounting)"


def _policy_title(table: pd.DataFrame, policy: str) -> str:
    rows = table[table["policy"] == policy]
    questions = "/".join(str(int(n)) for n in sorted(set(rows["questions"]), reverse=True))
    return f"{policy} ({rows['params'].iloc[0] / 1e6:.3g}M parameters), {questions} questions"


def panels(count: int, height: float):
    """A row of `count` panels sharing the y axis."""
    return plt.subplots(
        1, count, figsize=(5.2 * count, height), dpi=DPI, sharey=True, squeeze=False
    )


def _save(fig, path: Path) -> Path:
    for ax in fig.axes:
        if ax.get_xscale() == "log":
            # Labels on the decades only: minor labels of a narrow range run into each other.
            ax.xaxis.set_minor_formatter(NullFormatter())
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def finish_panels(fig, axes, ylabel: str, path: Path) -> Path:
    """Label the row's y axis, put one legend below the panels, and save."""
    axes[0][0].set_ylabel(ylabel)
    _legend_below(fig, axes)
    fig.tight_layout()
    return _save(fig, path)


def _legend_below(fig, axes) -> None:
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    if labels:
        fig.legend(
            [handles[label] for label in labels],
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(4, len(labels)),
            fontsize=8,
            frameon=False,
        )


def _strategy_curves(ax, points: pd.DataFrame, accounting: str) -> None:
    for strategy, group in points.groupby("strategy", sort=False):
        group = group.sort_values("budget")
        info = STRATEGIES[str(strategy)]
        ax.errorbar(
            group[f"flops_{accounting}"],
            group["error_rate"],
            yerr=group["stderr"],
            color=STRATEGY_COLOURS[str(strategy)],
            marker=info.marker,
            markersize=9 if info.kind == "greedy" else 5,
            linewidth=1.2,
            capsize=2,
            label=info.label,
        )
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)


def plot_error_vs_flops(table: pd.DataFrame, path: Path, accounting: str = "paper") -> Path:
    """Error rate against FLOPs, a panel per policy, a curve per strategy with its standard
    error; each panel on the points of `table` it is given."""
    policies = list(dict.fromkeys(table["policy"]))
    fig, axes = panels(len(policies), 4.2)
    for ax, policy in zip(axes[0], policies, strict=True):
        _strategy_curves(ax, table[table["policy"] == policy], accounting)
        ax.set_title(_policy_title(table, policy), fontsize=9)
        ax.set_xlabel(flops_label(accounting))
    return finish_panels(fig, axes, "error rate", path)


def plot_frontier(
    options: Sequence[Choice], front: Sequence[Choice], path: Path, accounting: str
) -> Path:
    """Every (policy, strategy, budget) point, a colour per policy and a marker per strategy,
    and the error-vs-FLOPs frontier across them."""
    policies = list(dict.fromkeys(c.policy for c in options))
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=DPI)
    for i, policy in enumerate(policies):
        for strategy in dict.fromkeys(c.strategy for c in options if c.policy == policy):
            points = sorted(
                (c for c in options if c.pair == (policy, strategy)), key=lambda c: c.flops
            )
            ax.errorbar(
                [c.flops for c in points],
                [c.error for c in points],
                yerr=[c.stderr for c in points],
                color=policy_colour(i),
                marker=STRATEGIES[strategy].marker,
                markersize=6,
                linestyle="none",
                alpha=0.75,
                capsize=2,
            )
    ax.step(
        [c.flops for c in front],
        [c.error for c in front],
        where="post",
        color="black",
        linewidth=1.5,
        label="frontier: lowest error at each cost",
    )
    handles = [
        plt.Line2D([], [], color=policy_colour(i), marker="s", linestyle="none", label=p)
        for i, p in enumerate(policies)
    ]
    handles += [
        plt.Line2D(
            [],
            [],
            color="grey",
            marker=STRATEGIES[s].marker,
            linestyle="none",
            label=STRATEGIES[s].label,
        )
        for s in dict.fromkeys(c.strategy for c in options)
    ]
    handles.append(ax.get_legend_handles_labels()[0][0])
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(flops_label(accounting))
    ax.set_ylabel("error rate")
    ax.set_title(
        f"compute-optimal frontier across model sizes ({options[0].questions} questions)",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_coverage(coverages: Sequence[PolicyCoverage], path: Path, extrapolate_to: int) -> Path:
    """pass@k per policy with its standard error, each law fitted on k up to the dotted line
    and its prediction beyond, and Levi's law fitted on every k extrapolated further."""
    fig, axes = panels(len(coverages), 4.2)
    for ax, cov in zip(axes[0], coverages, strict=True):
        ks, curve = cov.curve.ks, cov.curve
        ax.fill_between(
            ks,
            curve.coverage - curve.stderr,
            curve.coverage + curve.stderr,
            color="black",
            alpha=0.15,
            linewidth=0,
        )
        ax.plot(ks, curve.coverage, color="black", linewidth=2, label="measured pass@k")
        for law, forecast in cov.forecasts.items():
            ax.plot(
                forecast.ks,
                forecast.predicted,
                color=LAW_COLOURS[law],
                linewidth=1.2,
                label=f"{laws.LAW_LABELS[law]}, fitted on k <= {forecast.fitted_up_to}",
            )
        if "levi_mle" in cov.fits:
            far = np.unique(np.geomspace(1, extrapolate_to, 60).astype(int))
            ax.plot(
                far,
                cov.fits["levi_mle"].pass_at_k(far),
                color=LAW_COLOURS["levi_mle"],
                linestyle="--",
                linewidth=1,
                label=f"Levi, maximum likelihood on k <= {int(ks[-1])}, extrapolated",
            )
        ax.axvline(cov.fitted_up_to, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("k (samples per question)")
        ax.set_title(
            f"{cov.policy} ({cov.params / 1e6:.3g}M), {curve.questions} questions", fontsize=9
        )
        ax.grid(True, which="both", alpha=0.3)
    return finish_panels(fig, axes, "pass@k (share of questions with a right sample)", path)


def plot_coverage_vs_flops(
    coverages: Sequence[PolicyCoverage], path: Path, accounting: str
) -> Path:
    """pass@k against what k samples cost, every policy on one axis."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=DPI)
    for i, cov in enumerate(coverages):
        ax.plot(
            cov.flops[accounting],
            cov.curve.coverage,
            color=policy_colour(i),
            marker="o",
            markersize=3,
            label=f"{cov.policy} ({cov.params / 1e6:.3g}M)",
        )
    ax.set_xscale("log")
    ax.set_xlabel(flops_label(accounting))
    ax.set_ylabel("pass@k")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_voting_limits(limits: Sequence[PolicyLimits], path: Path) -> Path:
    """Each vote's accuracy against the number of samples, and the limit it approaches (with
    its interval)."""
    fig, axes = panels(len(limits), 4.0)
    for ax, policy in zip(axes[0], limits, strict=True):
        for strategy, gaps in policy.gaps.items():
            colour = STRATEGY_COLOURS[strategy]
            budgets = [g[0] for g in gaps]
            ax.errorbar(
                budgets,
                [g[1] for g in gaps],
                yerr=[g[2] for g in gaps],
                color=colour,
                marker=STRATEGIES[strategy].marker,
                capsize=2,
                label=STRATEGIES[strategy].label,
            )
            limit = policy.limits[strategy]
            ax.axhline(
                limit.accuracy,
                color=colour,
                linestyle="--",
                linewidth=1,
                label=f"{STRATEGIES[strategy].label}: limit",
            )
            ax.axhspan(limit.low, limit.high, color=colour, alpha=0.12, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("samples per question (n)")
        ax.set_title(policy.policy, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    return finish_panels(fig, axes, "accuracy", path)


def plot_coverage_by_level(coverages: Sequence[PolicyCoverage], path: Path) -> Path:
    """pass@k per difficulty group, a panel per policy."""
    fig, axes = panels(len(coverages), 4.0)
    cmap = plt.get_cmap("viridis")
    for ax, cov in zip(axes[0], coverages, strict=True):
        groups = [g for g in cov.groups if g.levels != ALL_LEVELS]
        levels = [g for g in groups if is_level(g.levels)]
        for i, group in enumerate(levels):
            ax.plot(
                group.curve.ks,
                group.curve.coverage,
                color=cmap(i / max(1, len(levels) - 1)),
                linewidth=1.3,
                label=f"level {group.levels}",
            )
        for group in groups:
            if group.levels in (EASY, HARD):
                ax.plot(
                    group.curve.ks,
                    group.curve.coverage,
                    color="black",
                    linestyle="-" if group.levels == EASY else "--",
                    linewidth=1.5,
                    label=group.levels,
                )
        ax.set_xscale("log")
        ax.set_xlabel("k (samples per question)")
        ax.set_title(cov.policy, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    return finish_panels(fig, axes, "pass@k", path)


def plot_easy_and_hard(table: pd.DataFrame, path: Path, accounting: str) -> Path | None:
    """Error against FLOPs on the easy and the hard questions, a row per policy; None when
    the experiment has no difficulty levels."""
    groups = [g for g in (EASY, HARD) if g in set(table["levels"])]
    if len(groups) < 2:
        return None
    policies = list(dict.fromkeys(table["policy"]))
    fig, axes = plt.subplots(
        len(policies),
        2,
        figsize=(10.4, 3.6 * len(policies)),
        dpi=DPI,
        sharey=True,
        squeeze=False,
    )
    for row, policy in enumerate(policies):
        for col, group in enumerate(groups):
            points = compared_points(in_group(table[table["policy"] == policy], group))
            ax = axes[row][col]
            _strategy_curves(ax, points, accounting)
            ax.set_title(
                f"{policy}, {group} questions ({int(points['questions'].iloc[0])})", fontsize=9
            )
            ax.set_xlabel(flops_label(accounting))
        axes[row][0].set_ylabel("error rate")
    _legend_below(fig, axes)
    fig.tight_layout()
    return _save(fig, path)
