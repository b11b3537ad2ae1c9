from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from inferscale.config import PolicyConfig
from inferscale.data.prepare import TOKENIZER_DIR, TRAIN_FILE
from inferscale.models.launch import run_sft, sft_spec
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tracking.wandb_runs import wandb_env


@task(name="sft", task_run_name="sft-{policy.name}", cache_policy=NO_CACHE)
@stage_body
def sft_task(ctx: RunContext, policy: PolicyConfig, data_dir: str) -> str:
    artifact = ctx.plan.sft[policy.name]
    if ctx.reuse(artifact):
        return str(artifact.path)
    data = Path(data_dir)
    tokenizer = str(data / TOKENIZER_DIR) if policy.hub_id is None else policy.hub_id
    tracked = ctx.config.tracking.mode != "disabled"
    spec = sft_spec(
        policy,
        ctx.config.sft,
        ctx.config.data.format.model_dump(),
        tokenizer,
        data / TRAIN_FILE,
        artifact.path,
        ctx.config.seed,
        report_to=["wandb"] if tracked else [],
    )
    env = wandb_env(ctx.tracking, "sft", f"sft-{policy.name}", ctx.plan.root) if tracked else {}
    get_run_logger().info(
        "training %s with %d DeepSpeed process(es); log: %s",
        policy.name,
        ctx.config.sft.num_processes,
        artifact.path / "train.log",
    )
    summary = run_sft(spec, ctx.config.sft, env, artifact.path / "train.log")
    get_run_logger().info(
        "trained %s: %d steps in %.0f s, final loss %.3f",
        policy.name,
        summary["steps"],
        summary["train_seconds"],
        summary["final_loss"],
    )
    artifact.mark_complete({"train": {k: v for k, v in summary.items() if k != "loss_history"}})
    return str(artifact.path)
