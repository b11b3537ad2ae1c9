from __future__ import annotations

import json
from pathlib import Path

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

from inferscale.analysis.evaluations import load_evaluations
from inferscale.analysis.experiment import AnalysisSettings, analyze
from inferscale.artifacts import COMPLETE_MARKER, Timer, write_json
from inferscale.models.files import PRM_SUMMARY_FILE
from inferscale.report.figures import write_figures
from inferscale.report.files import REPORT_FILE, SUMMARY_FILE, TABLE_FILE, table_file
from inferscale.report.html import ReportInputs, write_report
from inferscale.stages import Plan
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tracking.analysis_run import analysis_tables, log_analysis
from inferscale.tracking.wandb_runs import finish_run, start_run


def stage_seconds(plan: Plan) -> list[tuple[str, str, float | None]]:
    """How long each finished stage took, from its completion marker."""
    out = []
    for artifact in plan.all():
        marker = artifact.path / COMPLETE_MARKER
        if not marker.is_file() or artifact.stage == "analyze":
            continue
        meta = json.loads(marker.read_text())
        # Markers written before every stage recorded its seconds hold a trainer's own time.
        seconds = meta.get("seconds", meta.get("train", {}).get("train_seconds"))
        out.append((artifact.stage, artifact.path.name, seconds))
    return out


@task(name="analyze", cache_policy=NO_CACHE)
@stage_body
def analyze_task(
    ctx: RunContext, evaluation_dirs: dict[str, str], prm_dir: str | None = None
) -> str:
    artifact = ctx.plan.analyze
    if ctx.reuse(artifact):
        return str(artifact.path)
    config = ctx.config
    with Timer() as timer:
        evaluations = load_evaluations(
            {name: Path(d) for name, d in evaluation_dirs.items()},
            [p.name for p in config.policies],
            config.evaluation.pool_size,
            config.evaluation.aggregation,
        )
        analysis = analyze(evaluations, AnalysisSettings.of(config.analysis))
        analysis.table.to_csv(artifact.path / TABLE_FILE, index=False)
        for name, frame in analysis_tables(analysis).items():
            if name != "points" and not frame.empty:
                frame.to_csv(artifact.path / table_file(name), index=False)
        prm = {}
        if config.prm is not None and config.prm.is_oracle:
            prm = config.prm.oracle_identity
        elif prm_dir is not None:
            prm = json.loads((Path(prm_dir) / PRM_SUMMARY_FILE).read_text()).get("eval", {})
        summary = {"experiment": config.name, **analysis.summary(), "prm": prm}
        write_json(artifact.path / SUMMARY_FILE, summary)
        figures = write_figures(analysis, artifact.path)
        write_report(
            artifact.path / REPORT_FILE,
            ReportInputs(
                experiment=config.name,
                analysis=analysis,
                figures=figures,
                prm=prm,
                stage_seconds=stage_seconds(ctx.plan),
                config_yaml=yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
            ),
        )
        run = start_run(
            ctx.tracking, "analyze", "analyze", {"policies": list(evaluations)}, ctx.plan.root
        )
        log_analysis(run, analysis, figures, ctx.tracking, artifact.path)
        finish_run(run)
    artifact.mark_complete({"seconds": timer.seconds})
    return str(artifact.path)
