from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from inferscale.analysis.prm_quality import PRMVariant, prm_quality_summary
from inferscale.data.prepare import TEST_FILE
from inferscale.data.records import read_problems
from inferscale.prm_quality_config import PRMQualityConfig
from inferscale.prm_quality_plan import StudyPlan
from inferscale.report.prm_quality import write_prm_quality_report
from inferscale.scores import QuestionScore, read_metrics, read_scores
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.prm_variant import BALANCE_SCORES_FILE, HELDOUT_METRICS_FILE


def _balance(directory: Path) -> dict[float, list[QuestionScore]]:
    out: dict[float, list[QuestionScore]] = {}
    with (directory / BALANCE_SCORES_FILE).open() as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                tb = row.pop("balance_temperature")
                out.setdefault(tb, []).append(QuestionScore(**row))
    return out


@task(name="prm_quality_report", cache_policy=NO_CACHE)
@stage_body
def prm_quality_report_task(ctx: RunContext, study: PRMQualityConfig, sp: StudyPlan) -> str:
    """The study's analysis: each PRM's gain over majority vote against its quality, where
    REBASE reaches the Pareto front, the paper's headline, the balance temperature."""
    artifact = sp.report
    if ctx.reuse(artifact):
        return str(artifact.path)
    config = ctx.config
    base = {name: read_scores(a.path) for name, a in sp.base.evaluate.items()}
    params = {name: read_metrics(a.path).params for name, a in sp.base.evaluate.items()}
    problems = read_problems(sp.base.prepare_data.path / TEST_FILE)[: config.evaluation.limit]
    search_ids = {p.id for p in problems[: config.evaluation.search.limit]}
    variants = []
    for v in sp.variants:
        directory = sp.evaluations[v.name].path
        policies = [p.name for p in config.policies]
        variants.append(
            PRMVariant(
                name=v.name,
                kind=v.kind,
                labels=v.labels,
                seed=v.seed if v.kind == "learned" else None,
                requested_auc=v.auc,
                heldout=json.loads((directory / HELDOUT_METRICS_FILE).read_text()),
                scores={p: read_scores(directory / p) for p in policies},
                balance={p: _balance(directory / p) for p in policies},
            )
        )
    summary = prm_quality_summary(base, params, variants, search_ids, study.accounting)
    report = write_prm_quality_report(artifact.path, summary, title=config.name)
    get_run_logger().info("the PRM-quality report: %s", report)
    artifact.mark_complete({})
    return str(artifact.path)
