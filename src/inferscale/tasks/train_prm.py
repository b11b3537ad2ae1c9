from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from inferscale.data.adapters import load_step_labels
from inferscale.data.prepare import step_format
from inferscale.data.step_labels import from_math_shepherd, write_step_labels
from inferscale.models.launch import run_prm_training
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.label_steps import HELDOUT_FILE, LABELS_FILE
from inferscale.tracking.wandb_runs import wandb_env


def _upstream_labels(ctx: RunContext, out_dir: Path) -> tuple[Path, Path | None]:
    """The Math-Shepherd files of the config as step-label records in out_dir."""
    prm, fmt = ctx.config.prm, step_format(ctx.config.data)
    paths: list[Path | None] = []
    for name, ref in ((LABELS_FILE, prm.dataset), (HELDOUT_FILE, prm.heldout)):
        if ref is None:
            paths.append(None)
            continue
        solutions = load_step_labels(ref.path, ref.split, ref.limit)
        write_step_labels(out_dir / name, from_math_shepherd(solutions, fmt))
        paths.append(out_dir / name)
    return paths[0], paths[1]  # type: ignore[return-value]


@task(name="train_prm", cache_policy=NO_CACHE)
@stage_body
def train_prm_task(ctx: RunContext, labels_dir: str | None, init_dir: str | None) -> str:
    """Train the PRM under the `deepspeed` launcher, from a policy checkpoint or a hub model."""
    artifact = ctx.plan.train_prm
    assert artifact is not None and ctx.config.prm is not None
    if ctx.reuse(artifact):
        return str(artifact.path)
    prm, sft = ctx.config.prm, ctx.config.sft
    if labels_dir is not None:
        train_file, heldout_file = Path(labels_dir) / LABELS_FILE, Path(labels_dir) / HELDOUT_FILE
    else:
        train_file, heldout_file = _upstream_labels(ctx, artifact.path / "labels")
    tracked = ctx.config.tracking.mode != "disabled"
    spec = {
        "init_model": init_dir or prm.init_from,
        "train_file": str(train_file),
        "eval_file": str(heldout_file) if heldout_file else None,
        "output_dir": str(artifact.path),
        "deepspeed_config": sft.deepspeed,
        "format": ctx.config.data.format.model_dump(),
        "good_token": prm.good_token,
        "bad_token": prm.bad_token,
        "label": prm.label,
        "max_length": prm.max_length,
        "seed": ctx.config.seed,
        "max_steps": prm.max_steps,
        "per_device_batch_size": prm.per_device_batch_size,
        "gradient_accumulation_steps": sft.gradient_accumulation_steps,
        "learning_rate": prm.learning_rate,
        "warmup_steps": prm.warmup_steps,
        "lr_scheduler": sft.lr_scheduler,
        "weight_decay": sft.weight_decay,
        "bf16": sft.bf16,
        "use_cpu": sft.use_cpu,
        "threads_per_rank": sft.threads_per_process,
        "logging_steps": sft.logging_steps,
        "report_to": ["wandb"] if tracked else [],
        "run_name": "train_prm",
        "eval_batch_size": prm.batch_size,
        "eval_device": ctx.config.generation.device,
    }
    env = wandb_env(ctx.tracking, "train_prm", "train_prm", ctx.plan.root) if tracked else {}
    logger = get_run_logger()
    logger.info(
        "training the PRM from %s; log: %s", spec["init_model"], artifact.path / "train.log"
    )
    summary = run_prm_training(spec, sft, env, artifact.path / "train.log")
    metrics = summary.get("eval", {})
    logger.info(
        "trained the PRM: %d steps in %.0f s, held-out step AUC %s",
        summary["steps"],
        summary["train_seconds"],
        metrics.get("step_auc"),
    )
    artifact.mark_complete({"train": {k: v for k, v in summary.items() if k != "loss_history"}})
    return str(artifact.path)
