from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from inferscale.data.prepare import prepare_data
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tracking.wandb_runs import finish_run, start_run


@task(name="prepare_data", cache_policy=NO_CACHE)
@stage_body
def prepare_data_task(ctx: RunContext) -> str:
    artifact = ctx.plan.prepare_data
    if ctx.reuse(artifact):
        return str(artifact.path)
    stats = prepare_data(ctx.config.data, ctx.config.seed, artifact.path)
    run = start_run(
        ctx.tracking, "prepare_data", "prepare_data", ctx.config.data.model_dump(), ctx.plan.root
    )
    run.summary.update(stats)
    finish_run(run)
    artifact.mark_complete({"stats": stats})
    return str(artifact.path)
