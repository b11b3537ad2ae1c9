"""The summary printed at the end of a run and by `inferscale summary`, from `summary.json`."""

from __future__ import annotations

from pathlib import Path

from inferscale.report.files import REPORT_FILE, TABLE_FILE
from inferscale.scaling.laws import LAW_LABELS
from inferscale.search.registry import STRATEGIES


def _strategy(name: str, top: dict) -> str:
    return STRATEGIES[name].budget_label(top["budget"])


def _error(top: dict) -> str:
    return f"{top['error']:.3f} ± {top['stderr']:.3f}"


def describe_oracle(prm: dict) -> str:
    """An oracle PRM (`summary.json`'s `prm`: its kind and settings), in one sentence."""
    reads = "as a PRM trained from prm.init_from" if prm["flops"] == "prm" else "as zero"
    return (
        f"PRM: an oracle of exact step validity ({prm['kind']}, step AUC {prm['auc']:g}, "
        f"seed {prm['seed']}); its reads' FLOPs count {reads}"
    )


def format_summary(summary: dict, report_dir: Path) -> str:
    lines = [f"experiment {summary['experiment']} (error rates ± standard error over questions)"]
    for name, row in summary["policies"].items():
        cells = []
        pass_at = None
        for strategy, top in row["strategies"].items():
            cells.append(f"{_strategy(strategy, top)} {_error(top)}")
            if STRATEGIES[strategy].kind == "pool":
                pass_at = top
        if pass_at is not None:
            cells.append(f"pass@{pass_at['budget']} {pass_at['coverage']:.3f}")
        lines.append(f"{name} ({row['params'] / 1e6:.2f}M parameters): " + "  ".join(cells))
    comparisons = summary.get("comparisons", [])
    if comparisons:
        lines.append("comparisons on the same questions (difference ± paired standard error):")
        for c in comparisons:
            lines.append(
                f"  {c['what']}: {c['error']:.3f} vs {c['baseline_error']:.3f}, "
                f"{c['difference']:+.3f} ± {c['stderr']:.3f} on {c['questions']} questions "
                f"({c['verdict']})"
            )
    compared = summary.get("compared", {})
    for name, row in compared.items():
        if row["questions"] < row["of"]:  # the pools ran on more: their errors above differ
            lines.append(
                f"{name} on the {row['questions']} questions every strategy ran: "
                + "  ".join(
                    f"{_strategy(s, top)} {_error(top)}" for s, top in row["strategies"].items()
                )
            )
    for name, shares in summary.get("pareto", {}).items():
        tree = {k: v for k, v in shares.items() if STRATEGIES[k].kind == "tree"}
        if tree:
            on = (
                f" (on the {compared[name]['questions']} questions every strategy ran)"
                if name in compared
                else ""
            )
            lines.append(
                f"{name}: share of budgets on the error-vs-FLOPs Pareto front{on}: "
                + "  ".join(f"{STRATEGIES[k].label} {v:.2f}" for k, v in tree.items())
            )
    optimal = summary.get("compute_optimal", {}).get("paper")
    if optimal:
        lines.append(
            f"compute-optimal choice (paper FLOPs per question, {optimal['questions']} questions):"
        )
        for row in optimal["rows"]:
            best = row["best"]
            text = (
                f"  within {row['flops']:.3g}: {best['policy']} "
                f"{_strategy(best['strategy'], best)} {_error(best)}"
            )
            margin = row["margin"]
            if margin is not None:
                runner = row["runner_up"]
                text += (
                    f"; runner-up {runner['policy']} {_strategy(runner['strategy'], runner)} "
                    f"{margin['difference']:+.3f} ± {margin['stderr']:.3f}"
                )
            lines.append(text)
        fit = optimal["size_fit"]
        if fit["slope"] is None:
            lines.append(f"  optimal size against budget: {fit['reason']}")
        else:
            lines.append(f"  log10(C) = {fit['slope']:.2f} log10(N) + {fit['intercept']:.2f}")
    for name, coverage in summary.get("coverage", {}).items():
        forecasts = coverage["forecasts"]
        if forecasts:
            fitted = next(iter(forecasts.values()))["fitted_up_to"]
            lines.append(
                f"{name}: pass@{coverage['pool']} {coverage['pass_at_pool']:.3f} ± "
                f"{coverage['pass_at_pool_stderr']:.3f}; laws fitted on k <= {fitted} predict "
                + ", ".join(
                    f"{LAW_LABELS[law]} {f['error_at_pool']:+.3f}" for law, f in forecasts.items()
                )
            )
    for name, limits in summary.get("voting_limits", {}).items():
        lines.append(
            f"{name}: voting limits "
            + ", ".join(
                f"{STRATEGIES[s].label} {lim['limit']:.3f} [{lim['low']:.3f}, {lim['high']:.3f}]"
                for s, lim in limits.items()
            )
        )
    prm = summary.get("prm")
    if prm and "kind" in prm:
        lines.append(describe_oracle(prm))
    elif prm:
        lines.append(
            "PRM on held-out labelled steps: step AUC "
            + (f"{prm['step_auc']:.3f}" if prm.get("step_auc") is not None else "n/a")
            + _exact(prm)
            + "; best-of-n picks a right solution "
            + ", ".join(
                f"{k.removeprefix('bon_').removesuffix('_accuracy')} {prm[k]:.3f}"
                for k in ("bon_last_accuracy", "bon_min_accuracy", "bon_random_accuracy")
                if prm.get(k) is not None
            )
        )
    levels = {k: v for k, v in summary.get("greedy_accuracy_by_level", {}).items() if v}
    if levels:
        lines.append("greedy accuracy by level:")
        for name, by_level in levels.items():
            lines.append(f"  {name}: " + "  ".join(f"L{k} {v:.2f}" for k, v in by_level.items()))
    lines.append(f"report: {report_dir / REPORT_FILE}")
    lines.append(f"table:  {report_dir / TABLE_FILE}")
    return "\n".join(lines)


def _exact(prm: dict) -> str:
    """The PRM's AUC against exact step validity and the labels' agreement with it, where the
    task has exact validity."""
    if "step_auc_exact" not in prm:
        return ""
    auc = prm["step_auc_exact"]
    text = (
        f" (against exact validity {auc:.3f}" if auc is not None else " (against exact validity n/a"
    )
    rate = prm.get("label_agreement", {}).get("rate")
    if rate is not None:
        text += f"; the labels agree with it on {100 * rate:.1f}% of steps"
    return text + ")"
