from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from transformers import AutoTokenizer

from inferscale.artifacts import Timer
from inferscale.config import ExperimentConfig, PolicyConfig
from inferscale.data.prepare import TRAIN_FILE
from inferscale.data.prompting import policy_format
from inferscale.data.records import Problem, read_problems
from inferscale.data.step_labels import (
    StepLabelled,
    label_pending,
    label_solutions,
    stored_labels,
    write_step_labels,
)
from inferscale.data.step_validity import label_agreement, validity_of
from inferscale.generation.backends import load_backend
from inferscale.progress import Progress, stage_progress
from inferscale.ray_engine import deal_to_shards, set_shard_threads
from inferscale.results import ResultStore
from inferscale.shards import record_attempt, shard_store
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.given_models import policy_dir
from inferscale.tracking.wandb_runs import finish_run, start_run

LABELS_FILE = "labels.jsonl"
HELDOUT_FILE = "heldout.jsonl"


def question_store(split_file: str) -> str:
    """The store a split's labelled solutions gather in, a record per question, until the
    split's file is written whole from it."""
    return split_file.removesuffix(".jsonl") + "-by-question.jsonl"


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


def exact_validity(config: ExperimentConfig):
    """The synthetic task's exact prefix validity, as a function of a question and its steps."""
    assert config.data.arithmetic is not None
    return validity_of(
        config.data.arithmetic.modulus, config.data.format.step_format().answer_phrase
    )


def label_splits(config: ExperimentConfig, data_dir: str) -> dict[str, list[Problem]]:
    """The training questions whose solutions are labelled, by the file they go to."""
    cfg = config.prm.labels
    train = read_problems(Path(data_dir) / TRAIN_FILE)
    wanted = cfg.questions + cfg.heldout_questions
    if len(train) < wanted:
        raise ValueError(
            f"prm.labels wants {wanted} training questions (questions + heldout_questions) but "
            f"the training split has {len(train)}; lower them or raise the training split"
        )
    return {LABELS_FILE: train[: cfg.questions], HELDOUT_FILE: train[cfg.questions : wanted]}


def label_into(
    config: ExperimentConfig,
    policy: PolicyConfig,
    model_dir: str,
    completer_dir: str,
    splits: dict[str, list[Problem]],
    open_store,
    progress: Progress,
) -> dict[str, dict[str, int]]:
    """Label every split's questions that `open_store(store name)` lacks, by rollouts from the
    completer (Math-Shepherd's way) or by exact validity; the backends open only if something
    is left to label."""
    cfg, gen = config.prm.labels, config.generation
    validity = exact_validity(config) if cfg.kind == "exact" else None
    temperature, rollout_temperature = config.label_temperatures
    model_dir = policy_dir(policy, model_dir)
    completer_dir = policy_dir(config.completer_policy, completer_dir)
    settings = config.data.format
    fmt = policy_format(settings, AutoTokenizer.from_pretrained(model_dir))
    completer_fmt = policy_format(settings, AutoTokenizer.from_pretrained(completer_dir))
    opened: dict = {}

    def label(problems: list[Problem]) -> list[StepLabelled]:
        if not opened:
            opened["policy"] = load_backend(gen, model_dir)
            if validity is None and completer_dir != model_dir:
                opened["completer"] = load_backend(gen, completer_dir)
        return label_solutions(
            problems,
            opened["policy"],
            fmt,
            samples_per_question=cfg.samples_per_question,
            rollouts_per_step=cfg.rollouts_per_step,
            temperature=temperature,
            top_p=cfg.top_p,
            max_new_tokens=gen.max_new_tokens,
            seed=config.seed,
            batch_size=gen.batch_size,
            completer=opened.get("completer"),
            completer_fmt=completer_fmt,
            rollout_temperature=rollout_temperature,
            validity=validity,
        )

    # A call's solutions fill one batch; its rollouts then take several.
    per_call = max(1, gen.batch_size // cfg.samples_per_question)
    counts = {}
    try:
        for split, problems in splits.items():
            name = question_store(split)
            store = open_store(name)
            done = len(store.done_ids() & {p.id for p in problems})
            with progress(split.removesuffix(".jsonl"), len(problems), done) as a:
                counts[name] = label_pending(problems, store, label, per_call, a)
    finally:
        for backend in opened.values():
            backend.close()
    return counts


@task(
    name="label_steps-shard",
    task_run_name="label_steps-{policy.name}-shard-{shard}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def label_steps_shard_task(
    config: ExperimentConfig,
    policy: PolicyConfig,
    model_dir: str,
    completer_dir: str,
    data_dir: str,
    stage_dir: str,
    shard: int,
    ids: list[str],
) -> dict[str, dict[str, int]]:
    """Label the questions `ids` that the stage's stores lack, into the shard's own stores."""
    out, mine = Path(stage_dir), set(ids)
    splits = {
        split: [p for p in problems if p.id in mine]
        for split, problems in label_splits(config, data_dir).items()
    }
    record_attempt(out, shard, "started", questions=len(mine))
    set_shard_threads(config)
    counts = label_into(
        config,
        policy,
        model_dir,
        completer_dir,
        splits,
        lambda name: shard_store(out, shard, name),
        stage_progress(f"label_steps-{policy.name}-shard-{shard}"),
    )
    record_attempt(out, shard, "finished", stores=counts)
    return counts


def label_on_shards(
    ctx: RunContext,
    policy: PolicyConfig,
    model_dir: str,
    completer_dir: str,
    data_dir: str,
    splits: dict[str, list[Problem]],
) -> None:
    """The questions no store holds yet, dealt to shards that run on Ray; their records folded
    into the stage's stores."""
    logger = get_run_logger()
    out = ctx.plan.label_steps.path
    order = [p.id for problems in splits.values() for p in problems]

    def lacking() -> set[str]:
        held = set()
        for split in splits:
            held |= ResultStore(out / question_store(split)).done_ids()
        return set(order) - held

    deal_to_shards(
        ctx.config,
        out,
        order,
        lacking,
        label_steps_shard_task,
        {
            "config": ctx.config,
            "policy": policy,
            "model_dir": model_dir,
            "completer_dir": completer_dir,
            "data_dir": data_dir,
        },
        ctx.config.retries.label_steps.count,
        logger,
        "",
    )


@task(name="label_steps", task_run_name="label_steps-{policy.name}", cache_policy=NO_CACHE)
@stage_body
def label_steps_task(
    ctx: RunContext, policy: PolicyConfig, model_dir: str, completer_dir: str, data_dir: str
) -> str:
    """Step labels of the policy's solutions to training questions, by rollouts from the
    completer or by exact validity, gathered per question (so a killed run resumes), then
    written per split."""
    artifact = ctx.plan.label_steps
    assert artifact is not None and ctx.config.prm is not None
    if ctx.reuse(artifact, resumable=True):
        return str(artifact.path)
    logger = get_run_logger()
    cfg = ctx.config.prm.labels
    assert cfg is not None
    splits = label_splits(ctx.config, data_dir)
    with Timer() as timer:
        if ctx.config.execution.engine == "ray":
            label_on_shards(ctx, policy, model_dir, completer_dir, data_dir, splits)
        # After the shards, nothing is left to label.
        label_into(
            ctx.config,
            policy,
            model_dir,
            completer_dir,
            splits,
            lambda name: ResultStore(artifact.path / name),
            stage_progress(f"label_steps-{policy.name}"),
        )
    stats = {}
    # Rollout labels of the synthetic task are held against the truth they estimate.
    truth = (
        exact_validity(ctx.config) if ctx.config.data.arithmetic and cfg.kind == "rollout" else None
    )
    for split, problems in splits.items():
        records = stored_labels(ResultStore(artifact.path / question_store(split)), problems)
        write_step_labels(artifact.path / split, records)
        stats[split.removesuffix(".jsonl")] = label_stats(records)
        if truth is not None:
            agreement = label_agreement(
                [r.hard_labels for r in records], [truth(r.question, r.steps) for r in records]
            )
            stats[split.removesuffix(".jsonl")]["exact_agreement"] = agreement["rate"]
    logger.info("labelled steps of %s in %.0f s: %s", policy.name, timer.seconds, stats)
    temperature, rollout_temperature = ctx.config.label_temperatures
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
