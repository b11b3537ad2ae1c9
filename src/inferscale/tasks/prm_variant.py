from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from inferscale.artifacts import StageArtifact, Timer, write_json
from inferscale.compute import FREE
from inferscale.data.step_labels import read_step_labels
from inferscale.evaluation import searched_ids
from inferscale.generation.backends import load_backend
from inferscale.models.prm_metrics import score_heldout
from inferscale.prm_quality_config import PRMQualityConfig, balance_width
from inferscale.prm_quality_plan import Variant
from inferscale.progress import stage_progress
from inferscale.scores import SCORES_FILE
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.evaluate import evaluation_inputs
from inferscale.tasks.label_steps import HELDOUT_FILE, exact_validity
from inferscale.tasks.prm_reader import open_prm, oracle_scorer
from inferscale.variant_evaluation import evaluate_variant, variant_plan

HELDOUT_METRICS_FILE = "heldout.json"
BALANCE_SCORES_FILE = "balance_scores.jsonl"


def open_variant_scorer(ctx: RunContext, variant: Variant, prm_dir: str | None):
    """The variant's PRM behind the scorer interface."""
    if variant.kind == "learned":
        return open_prm(ctx.config, prm_dir)
    return oracle_scorer(ctx.config, variant.auc, variant.seed)


def model_dir(ctx: RunContext, name: str) -> str:
    policy = next(p for p in ctx.config.policies if p.name == name)
    return policy.checkpoint if not policy.trained else str(ctx.plan.sft[name].path)


@task(name="prm_quality", task_run_name="prm-quality-{variant.name}", cache_policy=NO_CACHE)
@stage_body
def prm_variant_task(
    ctx: RunContext,
    study: PRMQualityConfig,
    variant: Variant,
    artifact: StageArtifact,
    prm_dir: str | None,
) -> str:
    """Every policy's PRM-dependent results with the variant's PRM, and the PRM's held-out
    metrics."""
    if ctx.reuse(artifact, resumable=True):
        return str(artifact.path)
    logger = get_run_logger()
    config, base = ctx.config, ctx.plan
    experiments_prm = prm_dir == str(base.train_prm.path)
    with Timer() as timer:
        scorer = open_variant_scorer(ctx, variant, prm_dir)
        try:
            heldout = score_heldout(
                scorer,
                read_step_labels(base.label_steps.path / HELDOUT_FILE),
                exact_validity(config),
            )
        finally:
            scorer.close()
        write_json(artifact.path / HELDOUT_METRICS_FILE, heldout)
        logger.info(
            "%s: held-out step AUC %s against rollout labels, %s against exact validity",
            variant.name,
            *(_auc(heldout[k]) for k in ("step_auc", "step_auc_exact")),
        )
        # An oracle reads as the experiment's PRM would, unless the study makes it free.
        free = variant.kind != "learned" and study.oracles.flops == "zero"
        tb = study.balance.temperatures if "rebase" in study.strategies else []
        width = balance_width(study, config) if tb else None
        for policy in config.policies:
            problems, plan, policy_dir, _ = evaluation_inputs(
                config,
                policy,
                model_dir(ctx, policy.name),
                str(base.prepare_data.path),
                prm_dir or str(base.train_prm.path),
            )
            plan = variant_plan(plan, study.strategies)
            if free:
                plan = replace(plan, prm_cost=FREE)
            out = artifact.path / policy.name
            result = evaluate_variant(
                problems,
                searched_ids(problems, plan),
                plan,
                base.evaluate[policy.name].path,
                out,
                lambda policy_dir=policy_dir: load_backend(config.generation, policy_dir),
                lambda: open_variant_scorer(ctx, variant, prm_dir),
                experiments_prm,
                tb,
                width,
                log=lambda msg, name=policy.name: logger.info("%s %s %s", variant.name, name, msg),
                progress=stage_progress(f"prm-quality-{variant.name}-{policy.name}"),
            )
            _write_rows(out / SCORES_FILE, [asdict(s) for s in result["scores"]])
            _write_rows(
                out / BALANCE_SCORES_FILE,
                [
                    {"balance_temperature": t, **asdict(s)}
                    for t, scores in result["balance"].items()
                    for s in scores
                ],
            )
    artifact.mark_complete({"seconds": timer.seconds, "heldout": heldout})
    return str(artifact.path)


def _auc(value: float | None) -> str:
    """An AUC, or why there is none."""
    return "none (one class only)" if value is None else f"{value:.3f}"


def _write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
