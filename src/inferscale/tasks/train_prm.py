from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from inferscale.data.adapters import load_step_labels
from inferscale.data.prepare import step_format
from inferscale.data.step_labels import from_math_shepherd, write_step_labels
from inferscale.models.launch import prm_spec, run_prm_training
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.given_models import policy_dir
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
    if labels_dir is not None:
        train_file, heldout_file = Path(labels_dir) / LABELS_FILE, Path(labels_dir) / HELDOUT_FILE
    else:
        train_file, heldout_file = _upstream_labels(ctx, artifact.path / "labels")
    tracked = ctx.config.tracking.mode != "disabled"
    init = ctx.config.prm_init_policy
    if init is not None:
        init_dir = policy_dir(init, init_dir)
    spec = prm_spec(
        ctx.config,
        init_dir or ctx.config.prm.init_from,
        train_file,
        heldout_file,
        artifact.path,
        report_to=["wandb"] if tracked else [],
    )
    env = wandb_env(ctx.tracking, "train_prm", "train_prm", ctx.plan.root) if tracked else {}
    logger = get_run_logger()
    logger.info(
        "training the PRM from %s; log: %s", spec["init_model"], artifact.path / "train.log"
    )
    summary = run_prm_training(spec, ctx.config.prm_training, env, artifact.path / "train.log")
    metrics = summary.get("eval", {})
    logger.info(
        "trained the PRM: %d steps in %.0f s, held-out step AUC %s",
        summary["steps"],
        summary["train_seconds"],
        metrics.get("step_auc"),
    )
    artifact.mark_complete({"train": {k: v for k, v in summary.items() if k != "loss_history"}})
    return str(artifact.path)
