from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from transformers import AutoTokenizer

from inferscale.artifacts import Timer
from inferscale.config import PolicyConfig
from inferscale.data.prepare import TRAIN_FILE
from inferscale.data.prompting import policy_format
from inferscale.data.records import read_problems
from inferscale.data.step_labels import label_solutions, write_step_labels
from inferscale.generation.backends import load_backend
from inferscale.progress import stage_progress
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.given_models import policy_dir
from inferscale.tracking.wandb_runs import finish_run, start_run

LABELS_FILE = "labels.jsonl"
HELDOUT_FILE = "heldout.jsonl"


def label_stats(records) -> dict:
    steps = [s for r in records for s in r.soft_labels]
    return {
        "solutions": len(records),
        "steps": len(steps),
        "mean_soft_label": sum(steps) / len(steps) if steps else None,
        "share_hard_positive": (
            sum(h for r in records for h in r.hard_labels) / len(steps) if steps else None
        ),
        "share_final_correct": (
            sum(r.final_correct for r in records) / len(records) if records else None
        ),
    }


@task(name="label_steps", task_run_name="label_steps-{policy.name}", cache_policy=NO_CACHE)
@stage_body
def label_steps_task(
    ctx: RunContext, policy: PolicyConfig, model_dir: str, completer_dir: str, data_dir: str
) -> str:
    """Step labels of the policy's solutions to training questions, by rollouts from the
    completer (Math-Shepherd's way)."""
    artifact = ctx.plan.label_steps
    assert artifact is not None and ctx.config.prm is not None
    if ctx.reuse(artifact):
        return str(artifact.path)
    logger = get_run_logger()
    cfg, gen = ctx.config.prm.labels, ctx.config.generation
    assert cfg is not None
    train = read_problems(Path(data_dir) / TRAIN_FILE)
    wanted = cfg.questions + cfg.heldout_questions
    if len(train) < wanted:
        raise ValueError(
            f"prm.labels wants {wanted} training questions (questions + heldout_questions) but "
            f"the training split has {len(train)}; lower them or raise the training split"
        )
    temperature, rollout_temperature = ctx.config.label_temperatures
    stats = {}
    model_dir = policy_dir(policy, model_dir)
    completer_dir = policy_dir(ctx.config.completer_policy, completer_dir)
    settings = ctx.config.data.format
    fmt = policy_format(settings, AutoTokenizer.from_pretrained(model_dir))
    completer_fmt = policy_format(settings, AutoTokenizer.from_pretrained(completer_dir))
    backend = load_backend(gen, model_dir)
    completer = load_backend(gen, completer_dir) if completer_dir != model_dir else None
    try:
        with Timer() as timer:
            for name, problems in (
                (LABELS_FILE, train[: cfg.questions]),
                (HELDOUT_FILE, train[cfg.questions : wanted]),
            ):
                records = label_solutions(
                    problems,
                    backend,
                    fmt,
                    samples_per_question=cfg.samples_per_question,
                    rollouts_per_step=cfg.rollouts_per_step,
                    temperature=temperature,
                    top_p=cfg.top_p,
                    max_new_tokens=gen.max_new_tokens,
                    seed=ctx.config.seed,
                    batch_size=gen.batch_size,
                    completer=completer,
                    completer_fmt=completer_fmt,
                    rollout_temperature=rollout_temperature,
                    progress=stage_progress(f"label_steps {name.removesuffix('.jsonl')}"),
                )
                write_step_labels(artifact.path / name, records)
                stats[name.removesuffix(".jsonl")] = label_stats(records)
    finally:
        backend.close()
        if completer is not None:
            completer.close()
    logger.info("labelled steps of %s in %.0f s: %s", policy.name, timer.seconds, stats)
    resolved = {"temperature": temperature, "rollout_temperature": rollout_temperature}
    run = start_run(
        ctx.tracking,
        "label_steps",
        f"label_steps-{policy.name}",
        {**cfg.model_dump(), **resolved},
        ctx.plan.root,
    )
    run.summary.update({f"{k}/{m}": v for k, s in stats.items() for m, v in s.items()})
    finish_run(run)
    artifact.mark_complete({"stats": stats, "seconds": timer.seconds})
    return str(artifact.path)
