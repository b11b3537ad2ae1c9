from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from inferscale.analysis import (
    compared_headline,
    compared_points,
    headline,
    pareto_shares,
    plot_error_vs_flops,
    points_table,
    widest_points,
)
from inferscale.artifacts import write_json
from inferscale.models.prm_train import SUMMARY_FILE as PRM_SUMMARY_FILE
from inferscale.tasks.context import RunContext
from inferscale.tasks.evaluate import METRICS_FILE
from inferscale.tracking.wandb_runs import finish_run, log_image, log_table, start_run

TABLE_FILE = "points.csv"
PLOT_FILE = "error_vs_flops.png"  # every strategy, on the questions all of them ran
ALL_QUESTIONS_PLOT_FILE = "error_vs_flops_all_questions.png"
SUMMARY_FILE = "summary.json"


@task(name="analyze", cache_policy=NO_CACHE)
def analyze_task(
    ctx: RunContext, evaluation_dirs: dict[str, str], prm_dir: str | None = None
) -> str:
    artifact = ctx.plan.analyze
    if ctx.reuse(artifact):
        return str(artifact.path)
    evaluations = {
        name: json.loads((Path(d) / METRICS_FILE).read_text())
        for name, d in evaluation_dirs.items()
    }
    table = points_table(evaluations)
    table.to_csv(artifact.path / TABLE_FILE, index=False)
    compared = compared_points(table)
    plot = plot_error_vs_flops(compared, artifact.path / PLOT_FILE)
    widest = widest_points(table)
    if not widest.index.equals(compared.index):
        # Tree searches on fewer questions: the strategies that ran on every question get a
        # plot of their own, at the precision of the whole test set.
        plot_error_vs_flops(widest, artifact.path / ALL_QUESTIONS_PLOT_FILE)
    summary = {
        "experiment": ctx.config.name,
        "policies": headline(table),
        "greedy_accuracy_by_level": {
            name: m.get("greedy_accuracy_by_level") for name, m in evaluations.items()
        },
        "pareto": pareto_shares(table),
        "compared": compared_headline(table),
    }
    if prm_dir is not None:
        summary["prm"] = json.loads((Path(prm_dir) / PRM_SUMMARY_FILE).read_text()).get("eval", {})
    write_json(artifact.path / SUMMARY_FILE, summary)
    run = start_run(
        ctx.tracking, "analyze", "analyze", {"policies": list(evaluations)}, ctx.plan.root
    )
    log_table(run, "points", table)
    log_image(run, "error_vs_flops", plot)
    run.summary.update({"headline": summary["policies"]})
    finish_run(run)
    artifact.mark_complete({})
    return str(artifact.path)
