"""The PRM-quality study's report: `prm_quality.html` (a reading of the results in sentences,
the tables and two figures), `prm_quality.json` (the summary) and `prm_quality.csv` (its flat
rows), all built from `analysis.prm_quality.prm_quality_summary`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from inferscale.analysis.prm_quality import CSV_COLUMNS
from inferscale.report.files import figure_file
from inferscale.report.html import STYLE, e, figure, num, plus_minus, table
from inferscale.report.prm_quality_plots import plot_balance_temperature, plot_gain_against_auc
from inferscale.search.registry import STRATEGIES

PAGE_FILE = "prm_quality.html"
SUMMARY_FILE = "prm_quality.json"
ROWS_FILE = "prm_quality.csv"
GAIN_FIGURE = "prm_quality_gain"
BALANCE_FIGURE = "balance_temperature"
AUC_NAMES = {"auc_exact": "exact validity", "auc_rollout": "rollout labels"}


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return out.getvalue()


def _at(auc: float | None, variant: str | None) -> str:
    return f"{auc:.3f} ({e(variant)})"


def threshold_text(t: dict, what: str) -> str:
    """One sentence on where `what` first holds over the variants ordered by AUC, both kinds."""
    parts = []
    for kind, name in AUC_NAMES.items():
        x = t[kind]
        if not x["order"]:
            parts.append(f"(no variant measured against {name})")
        elif x["first_auc"] is None:
            parts.append(f"at no AUC against {name}")
        elif x["stays"]:
            parts.append(
                f"first at an AUC of {_at(x['first_auc'], x['first_variant'])} against {name} "
                "and at every higher one"
            )
        else:
            since = (
                f", and for good only from {_at(x['holds_from_auc'], x['holds_from_variant'])}"
                if x["holds_from_auc"] is not None
                else ", but not at the highest"
            )
            parts.append(
                f"first at an AUC of {_at(x['first_auc'], x['first_variant'])} against {name}, "
                f"not at every higher one{since}"
            )
    return f"{what} {'; '.join(parts)}."


def place(summary: dict, auc: float | None) -> str:
    """Where an AUC against exact validity sits among the oracles'."""
    oracles = sorted(
        (v["auc_exact"], v["name"])
        for v in summary["variants"]
        if v["kind"] != "learned" and v["auc_exact"] is not None
    )
    if auc is None or not oracles:
        return ""
    below = [o for o in oracles if o[0] <= auc]
    above = [o for o in oracles if o[0] > auc]
    if below and above:
        where = f"between {e(below[-1][1])} and {e(above[0][1])}"
    else:
        where = f"above {e(below[-1][1])}" if below else f"below {e(above[0][1])}"
    return f"Against exact validity it sits {where}. "


def learned_text(summary: dict) -> str:
    sentences = []
    for labels, s in summary["seeds"].items():
        aucs = [
            f"{x['mean']:.3f} ± {x['std']:.3f} ({x['min']:.3f} to {x['max']:.3f}) against {name}"
            for x, name in ((s[k], n) for k, n in AUC_NAMES.items())
            if x["mean"] is not None
        ]
        called = [
            f"{e(g['policy'])} {e(STRATEGIES[g['strategy']].budget_label(g['budget']))} "
            f"gain ({g['gain']['mean']:+.3f})"
            for g in s["gains"]
            if g["gain"]["called"]
        ]
        called += [
            f"{e(c['policy'])} weighted - majority vote ({c['difference']['mean']:+.3f})"
            for c in s["weighted_vs_majority"]
            if c["difference"]["called"]
        ]
        called += [
            f"{e(summary['small'])} REBASE width {c['width']} - {e(summary['large'])} majority "
            f"vote ({c['difference']['mean']:+.3f})"
            for c in s["headline"]
            if c["difference"]["called"]
        ]
        seeds = f"{len(s['seeds'])} seed" + ("s" if len(s["seeds"]) != 1 else "")
        sentences.append(
            f"The learned PRM trained on {e(labels)} labels ({seeds}) reaches a "
            "held-out AUC (mean ± the seeds' std, range) of "
            + (" and ".join(aucs) or "unmeasured")
            + ". "
            + place(summary, s["auc_exact"]["mean"])
            + (
                "Differences called beyond its seeds' spread: " + ", ".join(called) + "."
                if called
                else "None of its differences is called beyond its seeds' spread."
            )
            + f" REBASE is on the Pareto front for {s['rebase_on_front']['seeds_on_front']} of "
            f"{s['rebase_on_front']['seeds']} seeds."
        )
    return " ".join(sentences)


def reading(summary: dict) -> str:
    small, large = summary["small"], summary["large"]
    sentences = [
        threshold_text(summary["pareto"]["threshold"], "REBASE lands on the Pareto front"),
        *(
            threshold_text(t, f"For {e(p)}, weighted vote beats majority vote by more than one SE")
            for p, t in summary["weighted_vs_majority"]["threshold"].items()
        ),
    ]
    comparisons = [c for c in summary["headline"]["comparisons"] if "difference" in c]
    if any(c["holds"] for c in comparisons):
        sentences.append(
            threshold_text(
                summary["headline"]["threshold"],
                f"The paper's headline ({e(small)} with REBASE errs less than {e(large)} with "
                "majority vote at no more FLOPs, by more than two SE) holds",
            )
        )
    elif comparisons:
        closest = min(comparisons, key=lambda c: c["difference"] / max(c["stderr"], 1e-12))
        sentences.append(
            f"The paper's headline ({e(small)} with REBASE errs less than {e(large)} with "
            "majority vote at no more FLOPs, by more than two SE) holds at no PRM quality; "
            f"closest: {e(closest['variant'])} at width {closest['width']}, "
            f"{closest['difference']:+.3f} ± {closest['stderr']:.3f}."
        )
    else:
        sentences.append("The headline has no comparison: no REBASE of the small policy.")
    sentences.append(learned_text(summary))
    # One finding per line: on the page a list, printed one line each.
    return "<ul>\n" + "".join(f"<li>{s}</li>\n" for s in sentences if s) + "</ul>"


def variants_table(summary: dict) -> str:
    rows = [
        [
            e(v["name"]),
            e(v["kind"]),
            e(v["labels"] or "-"),
            e("-" if v["seed"] is None else v["seed"]),
            num(v["requested_auc"]),
            num(v["auc_exact"]),
            num(v["auc_rollout"]),
            e(v["heldout"].get("steps", "-")),
        ]
        for v in summary["variants"]
    ]
    headers = ["variant", "kind", "labels", "seed", "requested AUC", "AUC exact"]
    return table([*headers, "AUC rollout", "held-out steps"], rows, left=3)


def _gain(g: dict) -> str:
    if g["gain"] is None:
        return e(g["note"])
    return f"{g['gain']:+.3f} ± {g['gain_stderr']:.3f}"


def gains_table(gains: list[dict]) -> str:
    rows = [
        [
            e(g["policy"]),
            e(g["variant"]),
            e(STRATEGIES[g["strategy"]].budget_label(g["budget"])),
            plus_minus(g["error"], g["stderr"]),
            num(g["majority_error"]),
            _gain(g),
            f"{g['flops']:.3g}",
            str(g["questions"]),
        ]
        for g in gains
    ]
    headers = ["policy", "variant", "strategy", "error", "majority vote's at its FLOPs"]
    return table([*headers, "gain", "FLOPs", "questions"], rows, left=3)


def largest(gains: list[dict]) -> list[dict]:
    top: dict[tuple[str, str], int] = {}
    for g in gains:
        key = (g["policy"], g["strategy"])
        top[key] = max(top.get(key, 0), g["budget"])
    return [g for g in gains if g["budget"] == top[(g["policy"], g["strategy"])]]


def pareto_table(summary: dict) -> str:
    aucs = {v["name"]: v for v in summary["variants"]}
    rows = [
        [
            e(p["variant"]),
            num(aucs[p["variant"]]["auc_exact"]),
            num(aucs[p["variant"]]["auc_rollout"]),
            "<br>".join(
                f"{e(x['policy'])} width {x['budget']} ({x['error']:.3f} at {x['flops']:.3g})"
                for x in p["rebase_on_front"]
            )
            or "none",
        ]
        for p in summary["pareto"]["variants"]
    ]
    return table(["variant", "AUC exact", "AUC rollout", "REBASE points on the front"], rows)


def _verdict(c: dict) -> str:
    if c["lower_by_2se"]:
        return "lower by more than 2 SE"
    return "lower by more than 1 SE" if c["lower_by_1se"] else "not lower by 1 SE"


def weighted_table(summary: dict) -> str:
    rows = [
        [
            e(c["policy"]),
            e(c["variant"]),
            str(c["budget"]),
            num(c["error"]),
            num(c["baseline_error"]),
            f"{c['difference']:+.3f} ± {c['stderr']:.3f}",
            _verdict(c),
        ]
        for c in summary["weighted_vs_majority"]["comparisons"]
    ]
    headers = ["policy", "variant", "samples", "weighted vote", "majority vote"]
    return table([*headers, "difference", "verdict"], rows, left=2)


def headline_table(summary: dict) -> str:
    rows = []
    for c in summary["headline"]["comparisons"]:
        if "difference" not in c:
            rows.append([e(c["variant"]), str(c["width"]), f"{c['flops']:.3g}", e(c["note"])])
            rows[-1] += ["-"] * 4
            continue
        rows.append(
            [
                e(c["variant"]),
                str(c["width"]),
                f"{c['flops']:.3g}",
                f"{e(STRATEGIES['majority_vote'].budget_label(c['majority_budget']))} at "
                f"{c['majority_flops']:.3g}",
                num(c["error"]),
                num(c["baseline_error"]),
                f"{c['difference']:+.3f} ± {c['stderr']:.3f}",
                "holds" if c["holds"] else _verdict(c),
            ]
        )
    small, large = e(summary["small"]), e(summary["large"])
    headers = ["variant", f"{small} REBASE width", "its FLOPs", f"{large}'s"]
    return table([*headers, f"{small} error", f"{large} error", "difference", "verdict"], rows)


def balance_table(summary: dict) -> str:
    if not summary["balance"]:
        return '<p class="note">No balance-temperature sweep in this study.</p>'
    temperatures = sorted({t["tb"] for b in summary["balance"] for t in b["temperatures"]})
    rows = []
    for b in summary["balance"]:
        by_tb = {t["tb"]: t for t in b["temperatures"]}
        against = [
            "-"
            if ref not in b["best_against"]
            else f"{b['best_against'][ref]['difference']:+.3f} ± "
            f"{b['best_against'][ref]['stderr']:.3f}"
            + (", beyond noise" if b["best_against"][ref]["beyond_noise"] else "")
            for ref in ("0.1", "0.2")
        ]
        rows.append(
            [e(b["policy"]), e(b["variant"])]
            + [
                plus_minus(by_tb[tb]["error"], by_tb[tb]["stderr"]) if tb in by_tb else "-"
                for tb in temperatures
            ]
            + [f"{b['best_tb']:g}", *against]
        )
    headers = ["policy", "variant", *(f"Tb {tb:g}" for tb in temperatures), "best Tb"]
    return table([*headers, "best - Tb 0.1", "best - Tb 0.2"], rows, left=2)


def _spread(s: dict, call: bool = True) -> list[str]:
    if s["mean"] is None:
        return ["-"] * 5
    verdict = ("called" if s["called"] else "within the spread") if call else "-"
    return [num(s["mean"]), num(s["min"]), num(s["max"]), num(s["std"]), verdict]


def seeds_table(summary: dict) -> str:
    rows = []
    for labels, s in summary["seeds"].items():
        # An AUC is a measurement, not a difference to call.
        rows += [
            [e(labels), f"AUC against {name}", *_spread(s[k], call=False)]
            for k, name in AUC_NAMES.items()
        ]
        named = [
            (
                f"{g['policy']} {STRATEGIES[g['strategy']].budget_label(g['budget'])}: gain",
                g["gain"],
            )
            for g in s["gains"]
        ]
        named += [
            (f"{c['policy']} weighted - majority vote ({c['budget']})", c["difference"])
            for c in s["weighted_vs_majority"]
        ]
        named += [
            (
                f"{summary['small']} REBASE width {c['width']} - {summary['large']} majority vote",
                c["difference"],
            )
            for c in s["headline"]
        ]
        rows += [[e(labels), e(name), *_spread(value)] for name, value in named]
    headers = ["labels", "quantity", "mean", "min", "max", "std", "over the seeds"]
    return table(headers, rows, left=2)


def render(summary: dict, figures: dict[str, Path | None], title: str) -> str:
    small, large = e(summary["small"]), e(summary["large"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>inferscale PRM quality: {e(title)}</title>
<style>{STYLE}</style></head>
<body>
<h1>How good must the PRM be? {e(title)}</h1>
<p>Each PRM variant behind weighted vote and best-of-n (votes over the pool, on every question)
and REBASE (on the {summary["search_questions"]} searched questions); greedy decoding and
majority vote come from the experiment itself. FLOPs in {e(summary["accounting"])} accounting.
Every difference is paired over the same questions, with its standard error (SE).</p>
<h2 id="reading">Reading</h2>
{reading(summary)}
<h2 id="variants">PRM variants</h2>
{variants_table(summary)}
<h2 id="gain">Gain over majority vote at matched FLOPs</h2>
<p>Majority vote's error at the strategy's FLOPs (interpolated in log FLOPs between the two
budgets that bracket them) minus the strategy's: positive means the PRM helps.</p>
{figure(figures.get(GAIN_FIGURE), "gain over majority vote against the PRM's AUC")}
{gains_table(largest(summary["gains"]))}
<details><summary>Every budget</summary>{gains_table(summary["gains"])}</details>
<h2 id="pareto">REBASE on the Pareto front</h2>
<p>Both policies' points on the searched questions: greedy, majority vote, weighted vote,
best-of-n and REBASE.</p>
{pareto_table(summary)}
<h2 id="weighted">Weighted vote against majority vote</h2>
{weighted_table(summary)}
<h2 id="headline">{small} with REBASE against {large} with majority vote</h2>
<p>{large}'s majority vote at the smallest budget costing no less than {small}'s REBASE, so
{small} spends no more; it holds when {small} errs less by more than two SE.</p>
{headline_table(summary)}
<h2 id="balance">Balance temperature</h2>
{figure(figures.get(BALANCE_FIGURE), "REBASE error against the balance temperature")}
{balance_table(summary)}
<h2 id="seeds">The learned PRM over its seeds</h2>
<p>A difference is called when its sign is the same for every seed and its mean exceeds both
the seeds' standard deviation and one SE.</p>
{seeds_table(summary)}
</body></html>
"""


def write_prm_quality_report(out_dir: Path, summary: dict, title: str = "") -> Path:
    """The page, its figures, the summary and its rows in `out_dir`; the page's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        GAIN_FIGURE: plot_gain_against_auc(summary, out_dir / figure_file(GAIN_FIGURE)),
        BALANCE_FIGURE: plot_balance_temperature(summary, out_dir / figure_file(BALANCE_FIGURE)),
    }
    _write(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    _write(out_dir / ROWS_FILE, csv_text(summary["rows"]))
    return _write(out_dir / PAGE_FILE, render(summary, figures, title))
