"""The end-to-end flow: prepare_data -> sft (per policy) -> label_steps -> train_prm ->
evaluate (per policy) -> analyze. A given policy (a checkpoint) skips sft; a given PRM skips
label_steps and train_prm, and is measured on held-out labels (measure_prm) when the config
has them; an oracle PRM (`prm.kind`) skips them too.

Each task returns the path of its artifact and skips itself when that artifact is complete.
A failed branch (one policy's training or evaluation) does not stop the others; the flow
reports every failed stage at the end, and the next run redoes only those. With `only`, the
flow runs one stage alone from finished inputs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import State

from inferscale.config import parse_config
from inferscale.ray_engine import SHARDED_STAGES, hold_ray
from inferscale.single_stage import selected_steps, selection_problem
from inferscale.stages import STAGES, oracle_cost_policy, plan, run_root, stages_to_refresh
from inferscale.tasks.analyze import analyze_task
from inferscale.tasks.context import RunContext
from inferscale.tasks.evaluate import evaluate_task
from inferscale.tasks.label_steps import label_steps_task
from inferscale.tasks.measure_prm import measure_prm_task
from inferscale.tasks.prepare_data import prepare_data_task
from inferscale.tasks.retries import with_retries
from inferscale.tasks.sft import sft_task
from inferscale.tasks.train_prm import train_prm_task
from inferscale.tracking.connection import settle_tracking


class StagesFailed(RuntimeError):
    pass


class CannotRunAlone(ValueError):
    """`only` names a stage this run cannot run alone: no such stage, or unfinished inputs."""


def _run_name() -> str:
    """The flow run's name: the config's source (path and `--set` overrides), and the stage
    run alone."""
    parameters = flow_run.parameters
    only = parameters.get("only")
    if only is None:
        return parameters["config_path"]
    policy = parameters.get("policy")
    return f"{parameters['config_path']} --only {only}" + (f" --policy {policy}" if policy else "")


@flow(name="inferscale", flow_run_name=_run_name, validate_parameters=False)
def experiment_flow(
    config: dict,
    config_path: str,
    refresh: list[str] | None = None,
    only: str | None = None,
    policy: str | None = None,
) -> str | dict[str, str]:
    """Run (or resume) the experiment `config` (as `flow_parameters` gives it); return the
    analysis artifact's directory. With `only`, run that stage alone (for `policy` alone, or
    each policy) and return its artifacts' directories by name."""
    config = parse_config(config, source=config_path)
    # W&B's mode is settled here, once per run: every stage and training subprocess reads it
    # from this config (offline when the server does not answer).
    config = settle_tracking(config, run_root(config) / "wandb", get_run_logger().warning)
    if refresh and flow_run.run_count > 1:
        # A retried run (from the UI or the API) resumes its refresh: the first attempt marked
        # the refreshed stages unfinished, and those it redid before failing stay done.
        get_run_logger().info(
            "attempt %d: %s not refreshed again", flow_run.run_count, ", ".join(refresh)
        )
        refresh = []
    ctx = RunContext(config=config, plan=plan(config), refresh=stages_to_refresh(refresh or []))
    if only is not None or policy is not None:
        with _engine(ctx, {only} if only else {"evaluate"}):
            return _run_only(ctx, config_path, only, policy, refresh or [])
    # Up front, so that a refresh that fails half-way leaves no stale downstream result marked
    # finished: each refreshed artifact counts as unfinished until its task has redone it.
    for artifact in ctx.plan.all():
        if artifact.stage in ctx.refresh:
            artifact.invalidate()
    with _engine(ctx, set(STAGES)):
        return _run_all(ctx)


def _engine(ctx: RunContext, stages: set[str]) -> AbstractContextManager:
    """With Ray, one Ray serves the run: started as it begins when one of `stages` will shard
    its work, else by the first stage that does."""
    if ctx.config.execution.engine != "ray":
        return nullcontext()
    sharding = any(
        a.stage in stages and a.stage in SHARDED_STAGES and not a.complete for a in ctx.plan.all()
    )
    return hold_ray(ctx.config if sharding else None)


def _run_all(ctx: RunContext) -> str:
    config = ctx.config
    data_dir = with_retries(prepare_data_task, config)(ctx)
    failed: dict[str, BaseException | str] = {}
    models: dict[str, str] = {}
    for policy in config.policies:
        if not policy.trained:
            models[policy.name] = policy.checkpoint
            continue
        state = with_retries(sft_task, config)(ctx, policy, data_dir, return_state=True)
        if state.is_failed():
            failed[f"sft-{policy.name}"] = state.result(raise_on_failure=False)
        else:
            models[policy.name] = state.result()
    prm_dir, prm_summary, prm_missing = None, None, None
    if config.prm is not None and config.prm.given:
        prm_dir, prm_summary = config.prm.checkpoint, _measure_prm(ctx, failed)
    elif config.prm is not None and config.prm.is_oracle:
        # The oracle is ready as it is; its reads may cost as a policy's model, read from it.
        cost_from = oracle_cost_policy(config)
        if cost_from is not None:
            prm_dir = models.get(cost_from.name)
            if prm_dir is None:
                prm_missing = (
                    f"not run: the oracle PRM's reads cost as policy {cost_from.name}'s model, "
                    "which did not train"
                )
    elif config.prm is not None:
        prm_dir = prm_summary = _train_prm(ctx, models, data_dir, failed)
        if prm_dir is None:
            prm_missing = "not run: its strategies need the PRM"
    evaluate = with_retries(evaluate_task, config)
    # On Ray the policies' evaluations run at once: their shards share the cluster.
    concurrent = config.execution.engine == "ray"
    runs: dict[str, State | PrefectFuture] = {}
    for policy in config.policies:
        if policy.name not in models:
            continue
        if config.evaluation.needs_prm and prm_missing:
            failed[f"evaluate-{policy.name}"] = prm_missing
            continue
        args = (ctx, policy, models[policy.name], data_dir, prm_dir)
        runs[policy.name] = (
            evaluate.submit(*args) if concurrent else evaluate(*args, return_state=True)
        )
    evaluations: dict[str, str] = {}
    for name, run in runs.items():
        state = _final_state(run)
        if state.is_failed():
            failed[f"evaluate-{name}"] = state.result(raise_on_failure=False)
        else:
            evaluations[name] = state.result()
    _raise_if_failed(failed)
    return with_retries(analyze_task, config)(ctx, evaluations, prm_summary)


def _final_state(run: State | PrefectFuture) -> State:
    if isinstance(run, PrefectFuture):
        run.wait()
        return run.state
    return run


def _measure_prm(ctx: RunContext, failed: dict[str, BaseException | str]) -> str | None:
    """The given PRM's held-out metrics (their artifact), when the config has held-out labels."""
    if ctx.plan.measure_prm is None:
        return None
    state = with_retries(measure_prm_task, ctx.config)(ctx, return_state=True)
    if state.is_failed():
        failed["measure_prm"] = state.result(raise_on_failure=False)
        return None
    return state.result()


def _raise_if_failed(failed: dict[str, BaseException | str]) -> None:
    if failed:
        lines = "\n".join(f"  {name}: {err}" for name, err in failed.items())
        get_run_logger().error("failed stages:\n%s", lines)
        raise StagesFailed(
            f"{len(failed)} stage(s) failed:\n{lines}\n"
            "Finished stages are kept; fix the cause and run again to redo only these."
        )


def _run_only(
    ctx: RunContext, source: str, stage: str | None, policy: str | None, refresh: list[str]
) -> dict[str, str]:
    """One stage alone, from finished inputs; nothing downstream of it."""
    config, p = ctx.config, ctx.plan
    problem = selection_problem(config, p, stage, policy, refresh, source)
    if problem:
        raise CannotRunAlone(problem)
    assert stage is not None
    policies = {q.name: q for q in config.policies}
    data_dir = str(p.prepare_data.path)

    def model(name: str) -> str:
        given = policies[name].checkpoint
        return given if given is not None else str(p.sft[name].path)

    prm_dir = str(p.train_prm.path) if p.train_prm is not None else None
    prm_summary = prm_dir
    if config.prm is not None and config.prm.given:
        prm_dir = config.prm.checkpoint
        prm_summary = str(p.measure_prm.path) if p.measure_prm is not None else None
    elif config.prm is not None and config.prm.is_oracle:
        cost_from = oracle_cost_policy(config)
        prm_dir = model(cost_from.name) if cost_from is not None else None
    states = {}
    for step in selected_steps(config, p, stage, policy):
        if stage == "prepare_data":
            state = with_retries(prepare_data_task, config)(ctx, return_state=True)
        elif stage == "sft":
            state = with_retries(sft_task, config)(
                ctx, policies[step.policy], data_dir, return_state=True
            )
        elif stage == "label_steps":
            labelling, completer = config.labelling_policy, config.completer_policy
            state = with_retries(label_steps_task, config)(
                ctx,
                labelling,
                model(labelling.name),
                model(completer.name),
                data_dir,
                return_state=True,
            )
        elif stage == "train_prm":
            init = config.prm_init_policy
            labels_dir = str(p.label_steps.path) if p.label_steps is not None else None
            init_dir = model(init.name) if init is not None else None
            state = with_retries(train_prm_task, config)(
                ctx, labels_dir, init_dir, return_state=True
            )
        elif stage == "measure_prm":
            state = with_retries(measure_prm_task, config)(ctx, return_state=True)
        elif stage == "evaluate":
            needed_prm = prm_dir if config.evaluation.needs_prm else None
            state = with_retries(evaluate_task, config)(
                ctx,
                policies[step.policy],
                model(step.policy),
                data_dir,
                needed_prm,
                return_state=True,
            )
        else:
            evaluations = {name: str(a.path) for name, a in p.evaluate.items()}
            state = with_retries(analyze_task, config)(
                ctx, evaluations, prm_summary, return_state=True
            )
        states[step.name] = state
    failed = {name: s.result(raise_on_failure=False) for name, s in states.items() if s.is_failed()}
    _raise_if_failed(failed)
    return {name: state.result() for name, state in states.items()}


def _train_prm(
    ctx: RunContext,
    models: dict[str, str],
    data_dir: str,
    failed: dict[str, BaseException | str],
) -> str | None:
    """label_steps (when the PRM learns from rollouts) then train_prm; None if either failed."""
    config = ctx.config
    labels_dir = None
    if config.prm.labels is not None:
        policy, completer = config.labelling_policy, config.completer_policy
        untrained = [p.name for p in (policy, completer) if p.name not in models]
        if untrained:
            failed["label_steps"] = f"not run: policy {untrained[0]} did not train"
            return None
        state = with_retries(label_steps_task, config)(
            ctx, policy, models[policy.name], models[completer.name], data_dir, return_state=True
        )
        if state.is_failed():
            failed["label_steps"] = state.result(raise_on_failure=False)
            return None
        labels_dir = state.result()
    init = config.prm_init_policy
    if init is not None and init.name not in models:
        failed["train_prm"] = f"not run: policy {init.name} did not train"
        return None
    init_dir = models[init.name] if init is not None else None
    state = with_retries(train_prm_task, config)(ctx, labels_dir, init_dir, return_state=True)
    if state.is_failed():
        failed["train_prm"] = state.result(raise_on_failure=False)
        return None
    return state.result()
