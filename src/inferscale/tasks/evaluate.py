from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from transformers import AutoConfig, AutoTokenizer

from inferscale.artifacts import Timer
from inferscale.compute import FREE, ModelCost, count_parameters, reward_head_cost
from inferscale.config import ExperimentConfig, PolicyConfig
from inferscale.data.prepare import TEST_FILE
from inferscale.data.prompting import policy_format
from inferscale.data.records import Problem, read_problems
from inferscale.data.steps import StepFormat
from inferscale.evaluation import (
    SEARCHED,
    EvaluationPlan,
    SamplingSettings,
    evaluate_policy,
    generate_missing,
    planned_stores,
    searched_ids,
    store_path,
)
from inferscale.generation.backends import load_backend
from inferscale.progress import stage_progress
from inferscale.ray_engine import deal_to_shards, set_shard_threads
from inferscale.results import ResultStore
from inferscale.scores import EvaluationMetrics, write_evaluation
from inferscale.search.registry import STRATEGIES
from inferscale.search.tree import SearchSettings
from inferscale.shards import record_attempt, shard_store
from inferscale.tasks import given_models
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.given_models import policy_dir
from inferscale.tasks.prm_reader import open_prm
from inferscale.tracking.wandb_runs import finish_run, log_table, start_run


def prm_cost(config: ExperimentConfig, prm_dir: str | None) -> ModelCost | None:
    """What the PRM costs per token read, from the config in `prm_dir`: a causal LM's logits, or
    a reward head's two outputs (an oracle's reads: its init policy's model, or nothing with
    `flops: zero`); None when the evaluation is given no PRM to read."""
    prm = config.prm
    if prm is not None and prm.is_oracle and prm.oracle_settings.flops == "zero":
        return FREE
    if prm_dir is None:
        return None
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


def evaluation_inputs(
    config: ExperimentConfig,
    policy: PolicyConfig,
    model_dir: str,
    data_dir: str,
    prm_dir: str | None,
) -> tuple[list[Problem], EvaluationPlan, str, str | None]:
    """The questions a policy is evaluated on, its plan, and where its model and PRM load from.
    The plan reads a PRM when it has the PRM's cost (`prm_dir`, or an oracle whose reads are
    free)."""
    cfg, gen = config.evaluation, config.generation
    problems = read_problems(Path(data_dir) / TEST_FILE)[: cfg.limit]
    model_dir = policy_dir(policy, model_dir)
    prm_dir = given_models.prm_dir(config, prm_dir) if prm_dir is not None else None
    model_config = AutoConfig.from_pretrained(model_dir)
    fmt = policy_format(config.data.format, AutoTokenizer.from_pretrained(model_dir))
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
        search=search_settings(config, fmt),
        search_budgets={s: cfg.search.budgets[s] for s in cfg.tree_strategies},
        search_limit=cfg.search.limit,
        prm_cost=prm_cost(config, prm_dir),
    )
    return problems, plan, model_dir, prm_dir


@task(
    name="evaluate-shard",
    task_run_name="evaluate-{policy.name}-shard-{shard}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def evaluate_shard_task(
    config: ExperimentConfig,
    policy: PolicyConfig,
    model_dir: str,
    data_dir: str,
    prm_dir: str | None,
    stage_dir: str,
    shard: int,
    ids: list[str],
) -> dict[str, dict[str, int]]:
    """Generate what the stage's stores lack for the questions `ids`, into the shard's own
    stores; returns, per store, the questions already written and those generated now."""
    logger = get_run_logger()
    out = Path(stage_dir)
    problems, plan, model_dir, prm_dir = evaluation_inputs(
        config, policy, model_dir, data_dir, prm_dir
    )
    search_ids = searched_ids(problems, plan)
    mine = set(ids)
    problems = [p for p in problems if p.id in mine]
    attempt = record_attempt(out, shard, "started", questions=len(problems))
    set_shard_threads(config)
    counts = generate_missing(
        problems,
        search_ids & mine,
        plan,
        lambda name: shard_store(out, shard, store_path(out, name).name),
        lambda: load_backend(config.generation, model_dir),
        (lambda: open_prm(config, prm_dir)) if plan.prm_cost is not None else None,
        log=lambda msg: logger.info("%s shard %d: %s", policy.name, shard, msg),
        progress=stage_progress(f"evaluate-{policy.name}-shard-{shard}"),
    )
    record_attempt(out, shard, "finished", stores=counts)
    logger.info("%s shard %d done (attempt %d)", policy.name, shard, attempt)
    return counts


def generate_on_shards(
    ctx: RunContext,
    policy: PolicyConfig,
    model_dir: str,
    data_dir: str,
    prm_dir: str | None,
    problems: list[Problem],
    plan: EvaluationPlan,
) -> None:
    """The questions that some store of the stage still lacks, dealt to shards that run on Ray;
    their records folded into the stage's stores."""
    logger = get_run_logger()
    out = ctx.plan.evaluate[policy.name].path
    order = [p.id for p in problems]
    stores = planned_stores(
        plan.strategies,
        plan.budgets[-1],
        plan.search_budgets,
        len(problems),
        len(searched_ids(problems, plan)),
    )

    def lacking() -> set[str]:
        # A store holds the first `count` questions once done: all, or the searched ones.
        out_of = set()
        for name, count in stores.items():
            out_of |= set(order[:count]) - ResultStore(store_path(out, name)).done_ids()
        return out_of

    deal_to_shards(
        ctx.config,
        out,
        order,
        lacking,
        evaluate_shard_task,
        {
            "config": ctx.config,
            "policy": policy,
            "model_dir": model_dir,
            "data_dir": data_dir,
            "prm_dir": prm_dir,
        },
        ctx.config.retries.evaluate.count,
        logger,
        f"{policy.name}: ",
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
    given_model, given_prm = model_dir, prm_dir
    problems, plan, model_dir, prm_dir = evaluation_inputs(
        ctx.config, policy, model_dir, data_dir, prm_dir
    )
    model_config = AutoConfig.from_pretrained(model_dir)
    with Timer() as timer:
        if ctx.config.execution.engine == "ray":
            generate_on_shards(ctx, policy, given_model, data_dir, given_prm, problems, plan)
        # After the shards, nothing is left to generate: this scores what they wrote.
        result = evaluate_policy(
            problems,
            artifact.path,
            plan,
            open_backend=lambda: load_backend(gen, model_dir),
            open_scorer=(
                (lambda: open_prm(ctx.config, prm_dir)) if plan.prm_cost is not None else None
            ),
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
