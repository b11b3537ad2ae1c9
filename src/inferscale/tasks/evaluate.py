from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from transformers import AutoConfig

from inferscale.artifacts import Timer, write_json
from inferscale.compute import ModelCost, count_parameters
from inferscale.config import PolicyConfig
from inferscale.data.prepare import TEST_FILE, step_format
from inferscale.data.records import read_problems
from inferscale.evaluation import (
    SamplingSettings,
    evaluate_policy,
)
from inferscale.generation.backends import load_backend
from inferscale.tasks.context import RunContext
from inferscale.tracking.wandb_runs import finish_run, log_table, start_run

METRICS_FILE = "metrics.json"


@task(name="evaluate", task_run_name="evaluate-{policy.name}", cache_policy=NO_CACHE)
def evaluate_task(ctx: RunContext, policy: PolicyConfig, model_dir: str, data_dir: str) -> str:
    artifact = ctx.plan.evaluate[policy.name]
    if ctx.reuse(artifact, resumable=True):
        return str(artifact.path)
    logger = get_run_logger()
    cfg, gen = ctx.config.evaluation, ctx.config.generation
    problems = read_problems(Path(data_dir) / TEST_FILE)[: cfg.limit]
    model_config = AutoConfig.from_pretrained(model_dir)
    settings = SamplingSettings(
        max_new_tokens=gen.max_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        batch_size=gen.batch_size,
        seed=cfg.seed,
    )
    with Timer() as timer:
        scores = evaluate_policy(
            problems,
            artifact.path,
            step_format(ctx.config.data),
            settings,
            cfg.strategies,
            cfg.budgets,
            ModelCost.from_config(model_config),
            cfg.flops.paper_params,
            open_backend=lambda: load_backend(gen, model_dir),
            log=lambda msg: logger.info("%s %s", policy.name, msg),
        )
    parameters = count_parameters(model_config)
    metrics = {
        "policy": policy.name,
        "params": parameters["total"],
        "parameters": parameters,
        "questions": len(problems),
        "seconds": timer.seconds,
        **scores,
    }
    points = scores["points"]
    write_json(artifact.path / METRICS_FILE, metrics)

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
    for p in points:
        run.log(
            {
                "budget": p["budget"],
                f"{p['strategy']}/accuracy": p["accuracy"],
                f"{p['strategy']}/flops_paper": p["flops_paper"],
            }
        )
    log_table(run, "points", pd.DataFrame(points))
    run.summary.update({f"{p['strategy']}@{p['budget']}": p["accuracy"] for p in points})
    finish_run(run)
    artifact.mark_complete({"questions": len(problems), "seconds": timer.seconds})
    return str(artifact.path)
