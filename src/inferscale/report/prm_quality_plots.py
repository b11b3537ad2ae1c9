"""The PRM-quality study's figures: each strategy's gain over majority vote against the PRM's
held-out AUC, and REBASE's error against its balance temperature."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from inferscale.report.plots import STRATEGY_COLOURS, finish_panels, panels
from inferscale.search.registry import STRATEGIES

ORACLE_KINDS = ("noisy_oracle", "oracle")
# The learned PRM's markers by the labels it learned from, and their legend names.
LEARNED_MARKERS = {"rollout": ("s", "learned PRM"), "exact": ("P", "learned PRM, exact labels")}


def largest_gains(summary: dict, policy: str) -> dict[str, list[dict]]:
    """Strategy -> its gains at its largest budget, one per variant."""
    mine = [g for g in summary["gains"] if g["policy"] == policy]
    out: dict[str, list[dict]] = {}
    for strategy in dict.fromkeys(g["strategy"] for g in mine):
        rows = [g for g in mine if g["strategy"] == strategy]
        top = max(g["budget"] for g in rows)
        out[strategy] = [g for g in rows if g["budget"] == top]
    return out


def _gains(ax, points: list[tuple[float, dict]], **style) -> None:
    """(AUC, gain) points with their standard errors as error bars."""
    ax.errorbar(
        [a for a, _ in points],
        [g["gain"] for _, g in points],
        yerr=[g["gain_stderr"] for _, g in points],
        capsize=2,
        **style,
    )


def plot_gain_against_auc(summary: dict, path: Path) -> Path:
    """A panel per policy: gain over majority vote at matched FLOPs against the AUC, a line per
    strategy at its largest budget through the oracles, the learned PRM's seeds as markers."""
    variants = {v["name"]: v for v in summary["variants"]}
    policies = list(summary["params"])
    fig, axes = panels(len(policies), 4.2)
    for ax, policy in zip(axes[0], policies, strict=True):
        drawn = 0
        for strategy, gains in largest_gains(summary, policy).items():
            info = STRATEGIES[strategy]
            colour = STRATEGY_COLOURS[strategy]
            label = info.budget_label(gains[0]["budget"])
            measured = [
                (variants[g["variant"]], g)
                for g in gains
                if variants[g["variant"]]["auc_exact"] is not None and g["gain"] is not None
            ]
            oracles = sorted(
                ((v["auc_exact"], g) for v, g in measured if v["kind"] in ORACLE_KINDS),
                key=lambda ag: ag[0],
            )
            drawn += len(measured)
            if oracles:
                _gains(
                    ax,
                    oracles,
                    color=colour,
                    marker=info.marker,
                    markersize=5,
                    linewidth=1.2,
                    label=f"{label}, oracle PRMs",
                )
            for labels, (marker, name) in LEARNED_MARKERS.items():
                learned = [(v["auc_exact"], g) for v, g in measured if v["labels"] == labels]
                if learned:
                    _gains(
                        ax,
                        learned,
                        color=colour,
                        marker=marker,
                        markersize=8,
                        markerfacecolor="none",
                        linestyle="none",
                        label=f"{label}, {name} (one marker per seed)",
                    )
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "no gain with a held-out AUC against exact validity",
                transform=ax.transAxes,
                ha="center",
                fontsize=9,
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{policy} ({summary['params'][policy] / 1e6:.3g}M parameters)", fontsize=9)
        ax.set_xlabel("held-out step AUC against exact validity")
        ax.grid(True, alpha=0.3)
    return finish_panels(fig, axes, "gain over majority vote at matched FLOPs", path)


def plot_balance_temperature(summary: dict, path: Path) -> Path | None:
    """A panel per policy: REBASE's error at the sweep width against Tb, a line per variant."""
    sweeps = summary["balance"]
    if not sweeps:
        return None
    policies = [p for p in summary["params"] if any(b["policy"] == p for b in sweeps)]
    fig, axes = panels(len(policies), 4.2)
    colours = plt.get_cmap("viridis")
    names = list(dict.fromkeys(b["variant"] for b in sweeps))
    for ax, policy in zip(axes[0], policies, strict=True):
        for b in (b for b in sweeps if b["policy"] == policy):
            t = b["temperatures"]
            ax.errorbar(
                [x["tb"] for x in t],
                [x["error"] for x in t],
                yerr=[x["stderr"] for x in t],
                color=colours(names.index(b["variant"]) / max(1, len(names) - 1)),
                marker="D",
                markersize=4,
                capsize=2,
                linewidth=1.2,
                label=b["variant"],
            )
        width = next(b["width"] for b in sweeps if b["policy"] == policy)
        ax.set_xscale("log")
        temperatures = sorted({x["tb"] for b in sweeps for x in b["temperatures"]})
        ax.set_xticks(temperatures, [f"{x:g}" for x in temperatures])
        ax.set_title(f"{policy}: REBASE at width {width}", fontsize=9)
        ax.set_xlabel("balance temperature Tb")
        ax.grid(True, which="both", alpha=0.3)
    return finish_panels(fig, axes, "error rate (searched questions)", path)
