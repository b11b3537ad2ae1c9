"""Running one stage alone (`run --only STAGE [--policy NAME]`): which artifacts it makes, which
finished artifacts it reads, and why it cannot run yet."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from inferscale.artifacts import StageArtifact
from inferscale.config import ExperimentConfig
from inferscale.stages import STAGES, Plan, oracle_cost_policy

PER_POLICY_STAGES = ("sft", "evaluate")


@dataclass(frozen=True)
class Step:
    """One artifact of a stage: for a per-policy stage, that of one policy."""

    stage: str
    policy: str | None
    artifact: StageArtifact

    @property
    def name(self) -> str:
        """As its task run is named: `sft-A`, `train_prm`."""
        return f"{self.stage}-{self.policy}" if self.policy else self.stage

    def command(self, source: str) -> str:
        """The command that makes this artifact alone."""
        policy = f" --policy {shlex.quote(self.policy)}" if self.policy else ""
        return f"inferscale run {source} --only {self.stage}{policy}"


def selected_steps(
    config: ExperimentConfig, plan: Plan, stage: str, policy: str | None
) -> list[Step]:
    """The artifacts `--only stage [--policy policy]` makes (every policy's when none is
    named); assumes `selection_problem` found nothing wrong."""
    if stage in PER_POLICY_STAGES:
        artifacts = getattr(plan, stage)
        names = [policy] if policy else [p.name for p in config.policies if p.name in artifacts]
        return [Step(stage, name, artifacts[name]) for name in names]
    artifact = getattr(plan, stage)
    return [Step(stage, None, artifact)]


def input_steps(config: ExperimentConfig, plan: Plan, step: Step) -> list[Step]:
    """The finished artifacts `step` reads, in the order the flow makes them."""
    data = Step("prepare_data", None, plan.prepare_data)

    def sft(name: str) -> list[Step]:
        """The policy's training; nothing for a given checkpoint."""
        return [Step("sft", name, plan.sft[name])] if name in plan.sft else []

    prm = Step("train_prm", None, plan.train_prm) if plan.train_prm is not None else None
    measured = Step("measure_prm", None, plan.measure_prm) if plan.measure_prm else None
    if step.stage in ("prepare_data", "measure_prm"):
        return []
    if step.stage == "sft":
        return [data]
    if step.stage == "label_steps":
        names = dict.fromkeys([config.labelling_policy.name, config.completer_policy.name])
        return [data, *(s for name in names for s in sft(name))]
    if step.stage == "train_prm":
        init = config.prm_init_policy
        steps = sft(init.name) if init is not None else []
        if plan.label_steps is not None:
            steps.append(Step("label_steps", None, plan.label_steps))
        return steps
    if step.stage == "evaluate":
        if not config.evaluation.needs_prm:
            return [data, *sft(step.policy)]
        if config.prm is not None and config.prm.is_oracle:
            # Its reads cost as a policy's model: that policy's training, unless it is this one.
            cost_from = oracle_cost_policy(config)
            names = dict.fromkeys([step.policy, *([cost_from.name] if cost_from else [])])
            return [data, *(s for name in names for s in sft(name))]
        return [data, *sft(step.policy), *([prm] if prm else [])]
    evaluations = [Step("evaluate", name, a) for name, a in plan.evaluate.items()]
    return [*evaluations, *(s for s in (prm, measured) if s is not None)]


def _unfinished(step: Step) -> str | None:
    """Why `step`'s artifact cannot be read as it is, or None."""
    if not step.artifact.complete:
        return "is not finished"
    damage = step.artifact.damage()
    return f"is damaged: {'; '.join(damage[:2])}" if damage else None


def selection_problem(
    config: ExperimentConfig,
    plan: Plan,
    stage: str | None,
    policy: str | None,
    refresh: list[str],
    source: str,
) -> str | None:
    """Why `--only stage [--policy policy]` cannot run now, as one line that starts with
    `source` and says what to do; None when it can (or when no stage is selected)."""
    if stage is None:
        if policy is not None:
            return f"{source}: --policy {policy} needs --only sft or --only evaluate"
        return None
    if stage not in STAGES:
        return f"{source}: --only {stage}: no such stage; stages: {', '.join(STAGES)}"
    if refresh:
        return (
            f"{source}: --only and --refresh together: --only computes a stage that is not "
            "finished; to compute finished stages again, drop --only"
        )
    if getattr(plan, stage) is None or stage == "sft" and not plan.sft:
        why = _why_not(config, stage)
        return f"{source}: --only {stage}: this experiment has no {stage} stage ({why})"
    if policy is not None:
        if stage not in PER_POLICY_STAGES:
            return (
                f"{source}: --policy applies to {' and '.join(PER_POLICY_STAGES)}, not to "
                f"{stage}; drop it"
            )
        names = [p.name for p in config.policies]
        if policy not in names:
            return f"{source}: --policy {policy}: no such policy; policies: {', '.join(names)}"
        if stage == "sft" and policy not in plan.sft:
            return (
                f"{source}: --only sft --policy {policy}: {policy} is a given checkpoint, which "
                "no stage trains; its evaluation reads it as it is"
            )
    for step in selected_steps(config, plan, stage, policy):
        for needed in input_steps(config, plan, step):
            why = _unfinished(needed)
            if why:
                return (
                    f"{source}: {step.name} needs {needed.name}, which {why} "
                    f"({needed.artifact.path}); run `{needed.command(source)}` first"
                )
    return None


def _why_not(config: ExperimentConfig, stage: str) -> str:
    """Why the experiment has no `stage` stage."""
    if stage == "sft":
        return "every policy is a given checkpoint"
    if config.prm is None:
        return "it has no PRM"
    if config.prm.is_oracle:
        return f"its PRM is an oracle (prm.kind: {config.prm.kind}), neither trained nor measured"
    if stage == "measure_prm":
        if not config.prm.given:
            return "its PRM is trained, and its training measures it"
        return "its given PRM has no prm.heldout labels to be measured on"
    if config.prm.given:
        return "its PRM is a given checkpoint"
    return "its PRM reads labelled files"
