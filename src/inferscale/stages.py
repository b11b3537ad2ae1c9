"""The pipeline's stages, what each depends on, and the artifact every stage of a config maps to.

A stage's key is a hash of three things, all known before anything runs (so the whole plan, and
which parts of it are already on disk, is known too):
- settings: every config value the stage's code reads that can change what it writes (resolved:
  a default and the same value given explicitly key alike); speed settings stay out;
- inputs: the keys of the artifacts it reads, by name (`sft/S`);
- code: the hash of each package module it runs (`inferscale.stage_code`).
Each artifact records these components when its stage starts, so that `status` can say which of
them changed since the stage last finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from inferscale.artifacts import StageArtifact, stage_artifact
from inferscale.config import ExperimentConfig, PolicyConfig
from inferscale.models.checkpoints import checkpoint_identity
from inferscale.stage_code import PACKAGE_ROOT, stage_code

# Each stage's downstream stages, in DAG order.
STAGES = ("prepare_data", "sft", "label_steps", "train_prm", "measure_prm", "evaluate", "analyze")
DEPENDS_ON = {
    "prepare_data": (),
    "sft": ("prepare_data",),
    "label_steps": ("prepare_data", "sft"),
    "train_prm": ("label_steps", "sft"),
    "measure_prm": (),
    "evaluate": ("prepare_data", "sft", "train_prm"),
    "analyze": ("evaluate", "measure_prm"),
}
# A checkpoint the experiment is given keys the stages that read it as an input of this name,
# its identity (`models.checkpoints`) in place of an artifact's key.
GIVEN_PRM = "prm/checkpoint"
CHECKPOINT_HASHES_FILE = "checkpoint_hashes.json"  # under the run's folder


def given_policy(name: str) -> str:
    return f"policy/{name}"


# Settings that change how fast a stage runs but not what it produces: kept out of keys.
EVALUATION_SPEED_SETTINGS = {
    "batch_size": True,
    "threads": True,
    "device": True,
    "prefix_cache_bytes": True,
    "vllm": {
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "enable_prefix_caching",
        "enable_chunked_prefill",
        "enforce_eager",
    },
}
# The scorer's batch and cache; where a training's nodes are and how often it logs.
PRM_SPEED_SETTINGS = frozenset({"batch_size", "cache_bytes"})
GIVEN_PRM_SETTINGS = frozenset({"checkpoint", "revision", "format"})
ORACLE_SETTINGS = frozenset({"kind", "oracle"})
TRAINING_SPEED_SETTINGS = frozenset({"hostfile", "logging_steps"})
# Whole sections about how a run is carried out (retried, tracked, where it runs), never what a
# stage computes.
# The W&B Report spec that analyze leaves names a project only when its run got online, which
# a run settles as it starts (offline when W&B cannot be reached): keyed on tracking, the run
# would compute another key than `status` and `summary` do from the file.
RUN_SECTIONS = frozenset({"execution", "retries", "tracking"})
SAMPLING = {"temperature", "top_p"}


def stages_to_refresh(requested: list[str]) -> frozenset[str]:
    """The requested stages and every stage downstream of them."""
    unknown = [s for s in requested if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    out = set(requested)
    for stage in STAGES:  # DAG order: parents are settled before their children
        if any(parent in out for parent in DEPENDS_ON[stage]):
            out.add(stage)
    return frozenset(out)


@dataclass(frozen=True)
class Plan:
    root: Path
    prepare_data: StageArtifact
    sft: dict[str, StageArtifact]  # the policies the experiment trains
    label_steps: StageArtifact | None  # only when the PRM learns from rollouts
    train_prm: StageArtifact | None  # only when the config has a PRM to train
    measure_prm: StageArtifact | None  # a given PRM's held-out metrics, when labels are given
    evaluate: dict[str, StageArtifact]
    analyze: StageArtifact

    def all(self) -> list[StageArtifact]:
        stages = (self.label_steps, self.train_prm, self.measure_prm)
        prm = [a for a in stages if a is not None]
        return [self.prepare_data, *self.sft.values(), *prm, *self.evaluate.values(), self.analyze]


def run_root(config: ExperimentConfig) -> Path:
    return Path(config.output_dir) / config.name


def plan(config: ExperimentConfig, code_root: Path = PACKAGE_ROOT) -> Plan:
    """Every stage's artifact for `config`, keyed on the code of the package at `code_root`."""
    root = run_root(config)
    artifacts = root / "artifacts"
    given = _given_checkpoints(config, root / CHECKPOINT_HASHES_FILE)

    def artifact(stage: str, label: str, settings: dict, inputs: list) -> StageArtifact:
        """`inputs`: the artifacts it reads, and (name, identity) of given checkpoints."""
        named = dict(a if isinstance(a, tuple) else (a.name, a.key) for a in inputs if a)
        return stage_artifact(
            artifacts, stage, label, settings, named, stage_code(stage, code_root)
        )

    def model(policy: PolicyConfig) -> StageArtifact | tuple[str, str]:
        """What a stage that reads the policy's weights has as input."""
        if policy.trained:
            return sft[policy.name]
        name = given_policy(policy.name)
        return name, given[name]

    data_settings = config.data.model_dump() | {"format": config.data.format.key_settings()}
    data = artifact("prepare_data", "data", {"data": data_settings, "seed": config.seed}, [])
    sft = {
        p.name: artifact(
            "sft",
            p.name,
            {
                "policy": _policy_settings(p),
                "sft": {
                    **config.sft.model_dump(exclude={"deepspeed", *TRAINING_SPEED_SETTINGS}),
                    # the policy's own, where it has one
                    "learning_rate": p.learning_rate or config.sft.learning_rate,
                },
                "deepspeed": _deepspeed(config.sft.deepspeed),
                "seed": config.seed,
            },
            [data],
        )
        for p in config.policies
        if p.trained
    }
    generation = config.generation.model_dump(exclude=EVALUATION_SPEED_SETTINGS)
    label_steps, train_prm = _prm_stages(config, artifact, data, model, generation)
    prm_input, prm_settings, measure_prm = None, {}, None
    if config.prm is not None and config.prm.given:
        prm_input = (GIVEN_PRM, given[GIVEN_PRM])
        prm_settings = {"prm": {"format": config.prm.format}}
        if config.prm.heldout is not None:
            measure_prm = artifact(
                "measure_prm",
                "prm",
                {
                    **prm_settings,
                    "heldout": config.prm.heldout.model_dump(),
                    "data": {"format": config.data.format.plain_settings()},
                },
                [prm_input],
            )
    elif config.prm is not None and config.prm.is_oracle:
        # The oracle reads no weights: its reads cost as its init policy's model, or nothing.
        cost_from = oracle_cost_policy(config)
        prm_input = model(cost_from) if cost_from is not None else None
        prm_settings = {"prm": config.prm.oracle_identity}
    elif train_prm is not None:
        prm_input = train_prm
    evaluate = {
        policy.name: artifact(
            "evaluate",
            policy.name,
            {
                "generation": generation,
                "evaluation": config.evaluation.model_dump(),
                "data": {"format": config.data.format.key_settings()},
                "policy": {"nominal_params": policy.nominal_params},
                # A given PRM is read in its own format; a trained one in ours (its prm.json).
                **(prm_settings if config.evaluation.needs_prm else {}),
            },
            [data, model(policy), prm_input if config.evaluation.needs_prm else None],
        )
        for policy in config.policies
    }
    analyze = artifact(
        "analyze",
        "report",
        {
            "analysis": config.analysis.model_dump(),
            # The report names the oracle: no training summary tells of it.
            **({"prm": config.prm.oracle_identity} if config.prm and config.prm.is_oracle else {}),
        },
        [*evaluate.values(), train_prm, measure_prm],
    )
    return Plan(
        root=root,
        prepare_data=data,
        sft=sft,
        label_steps=label_steps,
        train_prm=train_prm,
        measure_prm=measure_prm,
        evaluate=evaluate,
        analyze=analyze,
    )


def oracle_cost_policy(config: ExperimentConfig) -> PolicyConfig | None:
    """The policy whose model an oracle PRM's reads cost as (`flops: prm`); None when they are
    free."""
    assert config.prm is not None and config.prm.is_oracle
    return config.prm_init_policy if config.prm.oracle_settings.flops == "prm" else None


def _given_checkpoints(config: ExperimentConfig, hashes: Path) -> dict[str, str]:
    """The identity of every checkpoint the experiment is given, by its input name."""
    out = {
        given_policy(p.name): checkpoint_identity(p.checkpoint, p.revision, hashes)
        for p in config.policies
        if p.checkpoint is not None
    }
    if config.prm is not None and config.prm.given:
        out[GIVEN_PRM] = checkpoint_identity(config.prm.checkpoint, config.prm.revision, hashes)
    return out


def _policy_settings(policy: PolicyConfig) -> dict:
    """What SFT builds the policy from, resolved. The nominal size only names the model in paper
    FLOPs (evaluate's key has it); the name only labels the directory and the W&B run."""
    # A trained policy names no checkpoint or revision: out, so they key no training.
    excluded = {"nominal_params", "name", "learning_rate", "checkpoint", "revision"}
    settings = policy.model_dump(exclude=excluded)
    if policy.hub_id is None:
        settings["intermediate_size"] = policy.ffn_size
    return settings


def _deepspeed(path: str) -> dict:
    """A DeepSpeed config's content: the file may move, its settings key the training."""
    return json.loads(Path(path).read_text())


def _label_settings(config: ExperimentConfig) -> dict:
    """What makes the step labels, resolved: a temperature or policy left to its default and
    the same one given explicitly make the same labels. Labels by rollouts key as they did
    before exact labels existed; exact ones have no rollout settings."""
    labels = config.prm.labels
    settings = {
        **labels.model_dump(exclude={"kind"}),
        "temperature": config.label_temperatures[0],
        "rollout_temperature": config.label_temperatures[1],
        "policy": config.labelling_policy.name,
        "completer": config.completer_policy.name,
    }
    if labels.kind == "rollout":
        return settings
    rollouts = set(labels.ROLLOUT_FIELDS)
    return {k: v for k, v in settings.items() if k not in rollouts} | {"kind": labels.kind}


def _prm_stages(
    config: ExperimentConfig,
    artifact,
    data: StageArtifact,
    model,
    generation: dict,
) -> tuple[StageArtifact | None, StageArtifact | None]:
    prm = config.prm
    if prm is None or not prm.trained:
        return None, None
    label_steps = None
    if prm.labels is not None:
        policy = config.labelling_policy
        label_steps = artifact(
            "label_steps",
            policy.name,
            {
                "prm": {"labels": _label_settings(config)},
                # The labels have their own sampling settings.
                "generation": {k: v for k, v in generation.items() if k not in SAMPLING},
                "data": {"format": config.data.format.key_settings()},
                "seed": config.seed,
            },
            [data, model(policy), model(config.completer_policy)],
        )
    init = config.prm_init_policy
    training = config.prm_training
    train_prm = artifact(
        "train_prm",
        "prm",
        {
            "prm": {
                # What names a given PRM or an oracle is out: a trained one has none of it.
                **prm.model_dump(
                    exclude={
                        "labels",
                        "training",
                        *GIVEN_PRM_SETTINGS,
                        *ORACLE_SETTINGS,
                        *PRM_SPEED_SETTINGS,
                    }
                ),
                # A policy's checkpoint is an input; a hub model, by its id.
                "init_from": prm.init_from if init is None else None,
                # Resolved: what it leaves out is the sft section's.
                "training": training.model_dump(exclude={"deepspeed", *TRAINING_SPEED_SETTINGS}),
            },
            "deepspeed": _deepspeed(training.deepspeed),
            # The PRM reads the plain step format: how policies are prompted is not its input.
            "data": {"format": config.data.format.plain_settings()},
            "seed": config.seed,
        },
        [label_steps, model(init) if init is not None else None],
    )
    return label_steps, train_prm
