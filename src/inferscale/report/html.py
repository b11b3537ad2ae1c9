"""`report.html`: the page a researcher reads first, self-contained (figures embedded), built
from an experiment's analysis, its figures, the PRM's metrics, stage timings and config."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inferscale.analysis.coverage import PolicyCoverage
from inferscale.analysis.experiment import ExperimentAnalysis
from inferscale.analysis.optimal import ComputeOptimal
from inferscale.analysis.points import is_level
from inferscale.report.summary import describe_oracle
from inferscale.scaling import laws
from inferscale.scaling.frontier import Choice, beyond_noise
from inferscale.search.registry import STRATEGIES

STYLE = """
body { font-family: system-ui, -apple-system, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
.wide { overflow-x: auto; }
th { background: #f5f5f7; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
.note { color: #555; font-size: 0.9em; } .best { font-weight: 600; }
pre { background: #f5f5f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 1em; }
"""


@dataclass(frozen=True)
class ReportInputs:
    experiment: str
    analysis: ExperimentAnalysis
    figures: dict[str, Path]  # name -> PNG
    prm: dict = field(default_factory=dict)  # held-out PRM metrics, or an oracle's settings
    stage_seconds: list[tuple[str, str, float | None]] = field(default_factory=list)
    config_yaml: str = ""


def e(text: object) -> str:
    return html.escape(str(text))


def num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def flops(x: float) -> str:
    return f"{x:.3g}"


def plus_minus(value: float, stderr: float) -> str:
    return f"{value:.3f} ± {stderr:.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Cells are HTML already; the first `left` columns are left-aligned."""

    def cell(tag: str, i: int, content: str) -> str:
        return f'<{tag} class="l">{content}</{tag}>' if i < left else f"<{tag}>{content}</{tag}>"

    head = "".join(cell("th", i, e(h)) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return (
        f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def figure(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'


def choice_name(c: Choice) -> str:
    return f"{e(c.policy)} {e(STRATEGIES[c.strategy].budget_label(c.budget))}"


def verdict(difference: float, stderr: float) -> str:
    return "clear" if beyond_noise(difference, stderr) else "within noise"


def optimal_table(optimal: ComputeOptimal) -> str:
    rows = []
    for r in optimal.rows:
        runner, m = r.runner_up, r.margin
        rows.append(
            [
                flops(r.flops),
                f'<span class="best">{choice_name(r.best)}</span> at {flops(r.best.flops)}',
                plus_minus(r.best.error, r.best.stderr),
                choice_name(runner) if runner else "-",
                plus_minus(runner.error, runner.stderr) if runner else "-",
                "-"
                if m is None
                else f"{m.difference:+.3f} ± {m.stderr:.3f}, {verdict(m.difference, m.stderr)}",
            ]
        )
    headers = [
        "FLOPs budget",
        "best choice, at its FLOPs",
        "its error",
        "runner-up",
        "its error",
        "runner-up - best",
    ]
    return table(headers, rows, left=0)


def size_fit_text(optimal: ComputeOptimal) -> str:
    fit = optimal.size_fit
    if fit.slope is None:
        return f'<p class="note">Optimal model size against budget: {e(fit.reason)}.</p>'
    return (
        f"<p>Optimal model size N against the budget C: log10(C) = {fit.slope:.2f} log10(N) + "
        f"{fit.intercept:.2f} ({fit.sizes} sizes; Wu et al. report 1.19 and 2.03 for Pythia).</p>"
    )


def section_optimal(inputs: ReportInputs) -> str:
    a = inputs.analysis
    paper, full = a.optimal["paper"], a.optimal["full"]
    return f"""
<h2 id="optimal">Compute-optimal choice</h2>
<p>For each budget of inference FLOPs per question, the (policy, strategy, budget) that errs
least among the measured points costing no more, on the {paper.questions} questions every
strategy ran, with the runner-up (the best other policy and strategy). The difference is paired
over the same questions; "within noise" means the two cannot be told apart at this sample
size (more than two standard errors apart is "clear"). <code>inferscale plan CONFIG --flops
X</code> answers for any budget.</p>
<h3>Paper accounting (generated tokens x 2N)</h3>
{optimal_table(paper)}
{size_fit_text(paper)}
{figure(inputs.figures.get("frontier"), "error rate against FLOPs across model sizes")}
<details><summary>Full accounting (prefill, attention, logits, every PRM read)</summary>
{optimal_table(full)}
{figure(inputs.figures.get("frontier_full"), "frontier, full accounting")}
</details>
"""


def section_strategies(inputs: ReportInputs) -> str:
    summary = inputs.analysis.summary()
    rows = []
    for policy, row in summary["compared"].items():
        for strategy, top in row["strategies"].items():
            own = summary["policies"][policy]["strategies"][strategy]
            rows.append(
                [
                    e(policy),
                    e(STRATEGIES[strategy].budget_label(top["budget"])),
                    plus_minus(top["error"], top["stderr"]),
                    f"{row['questions']}",
                    plus_minus(own["error"], own["stderr"]),
                    f"{own['questions']}",
                    num(own["coverage"]),
                ]
            )
    all_questions = figure(
        inputs.figures.get("error_vs_flops_all_questions"),
        "error rate against FLOPs on every question",
    )
    return f"""
<h2 id="strategies">Error rate against FLOPs</h2>
<p>Each strategy at each budget, with the standard error over questions, on the questions every
strategy ran.</p>
{figure(inputs.figures.get("error_vs_flops"), "error rate against FLOPs per policy")}
{all_questions}
{
        table(
            [
                "policy",
                "strategy at its largest budget",
                "error (shared questions)",
                "questions",
                "error (all it ran)",
                "questions",
                "coverage",
            ],
            rows,
            left=2,
        )
    }
"""


def forecast_table(coverages: Sequence[PolicyCoverage]) -> str:
    rows = []
    for cov in coverages:
        if not cov.forecasts:
            continue
        best = min(cov.forecasts.values(), key=lambda f: abs(f.error_at_max))
        for law, f in cov.forecasts.items():
            name = e(laws.LAW_LABELS[law])
            if f is best:
                name = f'<span class="best">{name}</span>'
            rows.append(
                [
                    e(cov.policy),
                    name,
                    f"{f.fitted_up_to}",
                    num(f.predicted[-1]),
                    plus_minus(f.measured[-1], f.measured_stderr[-1]),
                    f"{f.error_at_max:+.3f}",
                    num(f.max_abs_error),
                    num(f.mean_abs_error),
                ]
            )
    pool = coverages[0].curve.ks[-1] if coverages else 0
    return table(
        [
            "policy",
            "law",
            "fitted on k <=",
            f"predicted pass@{pool}",
            f"measured pass@{pool}",
            "error",
            "max |error|, held-out k",
            "mean |error|, held-out k",
        ],
        rows,
        left=2,
    )


def fits_table(coverages: Sequence[PolicyCoverage]) -> str:
    rows = []
    for cov in coverages:
        for law, fit in cov.fits.items():
            params = laws.law_parameters(fit)
            intervals = getattr(fit, "intervals", {})
            names = {"A": "ceiling"}
            cells = []
            for name, value in params.items():
                interval = intervals.get(names.get(name, name))
                text = f"{name} {value:.3g}"
                if interval is not None:
                    text += f" [{interval.low:.3g}, {interval.high:.3g}]"
                cells.append(e(text))
            exponent = ""
            if isinstance(fit, laws.LeviFit):
                exponent = f"{fit.tail_exponent:.3g} (beta)"
            elif isinstance(fit, laws.SchaefferFit):
                exponent = f"{fit.exponent:.3g} (alpha)"
            rows.append([e(cov.policy), e(laws.LAW_LABELS[law]), "; ".join(cells), exponent])
    return table(["policy", "law", "parameters [95% bootstrap interval]", "tail exponent"], rows, 3)


def section_coverage(inputs: ReportInputs) -> str:
    coverages = inputs.analysis.coverages
    if not coverages:
        return ""
    fitted = coverages[0].fitted_up_to
    pool = int(coverages[0].curve.ks[-1])
    return f"""
<h2 id="coverage">Coverage (pass@k) and its laws</h2>
<p>pass@k is the share of questions with a right answer among k samples (the unbiased
estimator over the pool of {pool}). Each law is fitted on k &lt;= {fitted} and predicts the
rest: the error on those held-out k tells which law to trust to extrapolate (the best at
k = {pool} in bold). Levi's model puts a Beta(alpha, beta) on each question's failure
probability with a ceiling A; Brown et al.'s is exp(a k^b); Schaeffer et al.'s fits the
distribution of single-attempt success probabilities and reads the exponent off its tail.</p>
{figure(inputs.figures.get("coverage"), "pass@k with every law's fit")}
{forecast_table(coverages)}
<h3>Fits on every k</h3>
{fits_table(coverages)}
<h3>Coverage against what it costs</h3>
<p>k samples cost the prompt once plus k decodes: C = F (N_prompt + k N_decode).</p>
{figure(inputs.figures.get("coverage_vs_flops"), "pass@k against FLOPs")}
"""


def section_limits(inputs: ReportInputs) -> str:
    limits = inputs.analysis.limits
    if not limits:
        return ""
    rows = []
    for policy in limits:
        for strategy, limit in policy.limits.items():
            gaps = ", ".join(f"{b}: {gap:+.3f}" for b, _, _, gap in policy.gaps[strategy])
            rows.append(
                [
                    e(policy.policy),
                    e(STRATEGIES[strategy].label),
                    num(limit.accuracy),
                    f"[{limit.low:.3f}, {limit.high:.3f}]",
                    e(gaps),
                ]
            )
    return f"""
<h2 id="limits">Voting limits</h2>
<p>As the number of samples grows, majority vote converges to the share of questions whose most
likely answer is right, and weighted vote to the share whose answer of largest expected total
reward is right (Wu et al., Theorems 1-2). A pool shows which answer is on top only up to
sampling noise, so each question counts with the probability that its right answer is on top
(a Bayesian bootstrap of its samples); the interval covers both the questions drawn and their
pools. The gap is the limit minus the vote's accuracy at each number of samples: where it
stays positive at the pool's size, more samples would still help.</p>
{table(["policy", "vote", "limit", "95% interval", "gap by samples"], rows, 2)}
{figure(inputs.figures.get("voting_limits"), "vote accuracy against samples, with limits")}
"""


def section_difficulty(inputs: ReportInputs) -> str:
    a = inputs.analysis
    levels = {
        name: ev.metrics.greedy_accuracy_by_level
        for name, ev in a.evaluations.items()
        if ev.metrics.greedy_accuracy_by_level
    }
    if not a.optimal_by_group and not levels:
        return ""
    names = sorted({k for v in levels.values() for k in v}, key=lambda k: (len(k), k))
    greedy = table(
        ["policy", *[f"level {k}" for k in names]],
        [[e(p), *[num(v.get(k)) for k in names]] for p, v in levels.items()],
    )
    groups = "".join(
        f"<h3>Compute-optimal on {e('level ' + group if is_level(group) else group)} "
        f"questions ({o.questions})</h3>{optimal_table(o)}"
        for group, o in a.optimal_by_group.items()
    )
    return f"""
<h2 id="difficulty">By difficulty</h2>
<p>Greedy accuracy by level, coverage by level, and the strategies on the easy (levels
{", ".join(str(x) for x in a.settings.easy_levels)}) against the hard questions.</p>
{greedy}
{figure(inputs.figures.get("coverage_by_level"), "pass@k by difficulty level")}
{figure(inputs.figures.get("easy_and_hard"), "error rate against FLOPs, easy and hard")}
<details><summary>The compute-optimal table per difficulty group (paper accounting)</summary>
{groups}
</details>
"""


def section_prm(inputs: ReportInputs) -> str:
    if not inputs.prm:
        return ""
    if "kind" in inputs.prm:
        return f"""
<h2 id="prm">Process reward model</h2>
<p>{e(describe_oracle(inputs.prm))}.</p>
"""
    flat = {}
    for k, v in inputs.prm.items():
        flat |= {f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v}
    rows = [[e(k), num(v) if isinstance(v, float) else e(v)] for k, v in flat.items()]
    return f"""
<h2 id="prm">Process reward model</h2>
<p>Measured on held-out labelled solutions: the step-level ROC AUC against their labels
(<code>step_auc</code>), and how often its best-of-n pick is right against a random pick. On the
synthetic task also the AUC against exact step validity (<code>step_auc_exact</code>) and how
often the held-out labels agree with exact validity (<code>label_agreement</code>).</p>
{table(["metric", "value"], rows)}
"""


def section_timings(inputs: ReportInputs) -> str:
    if not inputs.stage_seconds:
        return ""
    rows = [
        [e(stage), e(where), "-" if s is None else f"{s:.0f}"]
        for stage, where, s in inputs.stage_seconds
    ]
    return f"""
<h2 id="timings">Stages</h2>
{table(["stage", "artifact", "seconds"], rows, left=2)}
"""


def render(inputs: ReportInputs) -> str:
    a = inputs.analysis
    policies = ", ".join(
        f"{e(name)} ({ev.params / 1e6:.3g}M parameters)" for name, ev in a.evaluations.items()
    )
    sections = [
        section_optimal(inputs),
        section_strategies(inputs),
        section_coverage(inputs),
        section_limits(inputs),
        section_difficulty(inputs),
        section_prm(inputs),
        section_timings(inputs),
        f'<h2 id="config">Config</h2><pre>{e(inputs.config_yaml)}</pre>',
    ]
    nav = " ".join(
        f'<a href="#{anchor}">{title}</a>'
        for anchor, title in (
            ("optimal", "compute-optimal"),
            ("strategies", "strategies"),
            ("coverage", "coverage and laws"),
            ("limits", "voting limits"),
            ("difficulty", "difficulty"),
            ("prm", "PRM"),
            ("timings", "stages"),
            ("config", "config"),
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>inferscale report: {e(inputs.experiment)}</title>
<style>{STYLE}</style></head>
<body>
<h1>Inference scaling: {e(inputs.experiment)}</h1>
<p>Policies: {policies}.</p>
<nav>{nav}</nav>
{"".join(sections)}
</body></html>
"""


def write_report(path: Path, inputs: ReportInputs) -> Path:
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(inputs))
    tmp.replace(path)
    return path
