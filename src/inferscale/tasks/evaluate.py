from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from transformers import AutoConfig, AutoTokenizer

from inferscale.artifacts import Timer
from inferscale.compute import ModelCost, count_parameters, reward_head_cost
from inferscale.config import ExperimentConfig, PolicyConfig
from inferscale.data.prepare import TEST_FILE
from inferscale.data.prompting import policy_format
from inferscale.data.records import read_problems
from inferscale.data.steps import StepFormat
from inferscale.evaluation import SEARCHED, EvaluationPlan, SamplingSettings, evaluate_policy
from inferscale.generation.backends import load_backend
from inferscale.progress import stage_progress
from inferscale.scores import EvaluationMetrics, write_evaluation
from inferscale.search.registry import STRATEGIES
from inferscale.search.tree import SearchSettings
from inferscale.tasks import given_models
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.given_models import policy_dir
from inferscale.tasks.prm_reader import open_prm
from inferscale.tracking.wandb_runs import finish_run, log_table, start_run


def prm_cost(config: ExperimentConfig, prm_dir: str) -> ModelCost:
    """What the PRM costs per token read, from its config: a causal LM's logits, or a reward
    head's two outputs."""
    prm_config = AutoConfig.from_pretrained(prm_dir)
    if config.prm.format == "qwen_prm":
        return reward_head_cost(prm_config)
    return ModelCost.from_config(prm_config)


def search_settings(config: ExperimentConfig, fmt: StepFormat) -> SearchSettings:
    """The tree searches' settings from the experiment's evaluation and generation sections, for
    a policy prompted with `fmt`."""
    cfg, gen = config.evaluation, config.generation
    return SearchSettings(
        fmt=fmt,
        temperature=gen.temperature,
        top_p=gen.top_p,
        max_step_tokens=cfg.search.max_step_tokens,
        max_depth=cfg.search.max_depth,
        seed=cfg.seed,
        aggregation=cfg.aggregation,
        balance_temperature=cfg.search.balance_temperature,
        exploration=cfg.search.exploration,
        beam_width=cfg.search.beam_width,
    )


@task(name="evaluate", task_run_name="evaluate-{policy.name}", cache_policy=NO_CACHE)
@stage_body
def evaluate_task(
    ctx: RunContext, policy: PolicyConfig, model_dir: str, data_dir: str, prm_dir: str | None
) -> str:
    artifact = ctx.plan.evaluate[policy.name]
    if ctx.reuse(artifact, resumable=True):
        return str(artifact.path)
    logger = get_run_logger()
    cfg, gen = ctx.config.evaluation, ctx.config.generation
    problems = read_problems(Path(data_dir) / TEST_FILE)[: cfg.limit]
    model_dir = policy_dir(policy, model_dir)
    prm_dir = given_models.prm_dir(ctx.config, prm_dir) if prm_dir is not None else None
    model_config = AutoConfig.from_pretrained(model_dir)
    fmt = policy_format(ctx.config.data.format, AutoTokenizer.from_pretrained(model_dir))
    plan = EvaluationPlan(
        fmt=fmt,
        strategies=cfg.strategies,
        budgets=cfg.budgets,
        sampling=SamplingSettings(
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature,
            top_p=gen.top_p,
            batch_size=gen.batch_size,
            seed=cfg.seed,
        ),
        cost=ModelCost.from_config(model_config, nominal=policy.nominal_params),
        paper_params=cfg.flops.paper_params,
        aggregation=cfg.aggregation,
        search=search_settings(ctx.config, fmt),
        search_budgets={s: cfg.search.budgets[s] for s in cfg.tree_strategies},
        search_limit=cfg.search.limit,
        prm_cost=prm_cost(ctx.config, prm_dir) if prm_dir else None,
    )
    with Timer() as timer:
        result = evaluate_policy(
            problems,
            artifact.path,
            plan,
            open_backend=lambda: load_backend(gen, model_dir),
            open_scorer=(lambda: open_prm(ctx.config, prm_dir)) if prm_dir else None,
            log=lambda msg: logger.info("%s %s", policy.name, msg),
            progress=stage_progress(f"evaluate-{policy.name}"),
        )
    parameters = count_parameters(model_config)
    points = result["points"]
    metrics = EvaluationMetrics(
        policy=policy.name,
        params=parameters["total"],
        parameters=parameters,
        cost=plan.cost,
        paper_params=plan.paper_params,
        questions=len(problems),
        seconds=timer.seconds,
        points=points,
        greedy_accuracy_by_level=result.get("greedy_accuracy_by_level", {}),
    )
    write_evaluation(artifact.path, metrics, result["scores"])

    run = start_run(
        ctx.tracking,
        "evaluate",
        f"evaluate-{policy.name}",
        {
            "policy": policy.model_dump(),
            "evaluation": cfg.model_dump(),
            "generation": gen.model_dump(),
        },
        ctx.plan.root,
    )
    # The pools' points on the searched questions alone serve the comparison with the tree
    # searches; the table has them, the curves and the summary keep each pool on every question.
    tracked = [
        p for p in points if p.question_set != SEARCHED or STRATEGIES[p.strategy].kind == "tree"
    ]
    for p in tracked:
        run.log(
            {
                "budget": p.budget,
                f"{p.strategy}/accuracy": p.accuracy,
                f"{p.strategy}/flops_paper": p.flops_paper,
            }
        )
    log_table(run, "points", pd.DataFrame([asdict(p) for p in points]))
    run.summary.update({f"{p.strategy}@{p.budget}": p.accuracy for p in tracked})
    finish_run(run)
    artifact.mark_complete({"questions": len(problems), "seconds": timer.seconds})
    return str(artifact.path)
