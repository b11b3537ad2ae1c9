"""How good a given PRM is: its step AUC and best-of-n picks on held-out labelled solutions (an
upstream Math-Shepherd file), as a trained PRM's training measures them."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from inferscale.artifacts import write_json
from inferscale.data.adapters import load_step_labels
from inferscale.data.prepare import step_format
from inferscale.data.step_labels import from_math_shepherd
from inferscale.models.files import PRM_SUMMARY_FILE
from inferscale.models.prm_metrics import score_heldout
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.given_models import prm_dir
from inferscale.tasks.prm_reader import open_prm
from inferscale.tracking.wandb_runs import finish_run, start_run


@task(name="measure_prm", cache_policy=NO_CACHE)
@stage_body
def measure_prm_task(ctx: RunContext) -> str:
    artifact = ctx.plan.measure_prm
    prm = ctx.config.prm
    assert artifact is not None and prm is not None and prm.heldout is not None
    if ctx.reuse(artifact):
        return str(artifact.path)
    ref = prm.heldout
    records = from_math_shepherd(
        load_step_labels(ref.path, ref.split, ref.limit), step_format(ctx.config.data)
    )
    scorer = open_prm(ctx.config, prm_dir(ctx.config, prm.checkpoint))
    try:
        metrics = score_heldout(scorer, records)
    finally:
        scorer.close()
    get_run_logger().info(
        "%s PRM %s on %d held-out solutions: step AUC %s",
        prm.format,
        prm.checkpoint,
        metrics["solutions"],
        metrics["step_auc"],
    )
    summary = {"checkpoint": prm.checkpoint, "format": prm.format, "eval": metrics}
    write_json(artifact.path / PRM_SUMMARY_FILE, summary)
    run = start_run(
        ctx.tracking, "measure_prm", "measure_prm", {"prm": prm.model_dump()}, ctx.plan.root
    )
    run.summary.update({f"heldout/{k}": v for k, v in metrics.items() if v is not None})
    finish_run(run)
    artifact.mark_complete({"seconds": metrics["eval_seconds"]})
    return str(artifact.path)
