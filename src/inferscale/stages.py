"""The pipeline's stages, what each depends on, and the artifact every stage of a config maps to.

All keys follow from the config and the code alone, so the whole plan (and which parts of it are
already on disk) is known before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from inferscale.artifacts import StageArtifact, code_version, stage_artifact
from inferscale.config import ExperimentConfig

# Each stage's downstream stages, in DAG order.
STAGES = ("prepare_data", "sft", "label_steps", "train_prm", "evaluate", "analyze")
DEPENDS_ON = {
    "prepare_data": (),
    "sft": ("prepare_data",),
    "label_steps": ("prepare_data", "sft"),
    "train_prm": ("label_steps", "sft"),
    "evaluate": ("prepare_data", "sft", "train_prm"),
    "analyze": ("evaluate",),
}
# The package modules whose source is part of each stage's key.
STAGE_CODE = {
    "prepare_data": ("data", "models/tokenizer"),
    # `numerics` (the CPU kernel pins) in every stage that trains or generates.
    "sft": ("models/sft", "models/factory", "models/launch", "numerics"),
    "label_steps": ("data/step_labels", "generation", "grading", "grading_worker", "numerics"),
    "train_prm": (
        "numerics",
        "models/prm",
        "models/prm_train",
        "models/prm_metrics",
        "models/prm_scorer",
        "models/launch",
    ),
    "evaluate": (
        "evaluation",
        "generation",
        "search",
        "scaling/subsets",
        "grading",
        "grading_worker",
        "compute",
        "results",
        "scores",
        "numerics",
    ),
    # The task itself writes the analysis files and the report: its code is part of the key.
    "analyze": ("analysis", "scaling", "report", "tracking/analysis_run", "tasks/analyze"),
}
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
    sft: dict[str, StageArtifact]
    label_steps: StageArtifact | None  # only when the PRM learns from rollouts
    train_prm: StageArtifact | None  # only when the config has a PRM
    evaluate: dict[str, StageArtifact]
    analyze: StageArtifact

    def all(self) -> list[StageArtifact]:
        prm = [a for a in (self.label_steps, self.train_prm) if a is not None]
        return [self.prepare_data, *self.sft.values(), *prm, *self.evaluate.values(), self.analyze]


def run_root(config: ExperimentConfig) -> Path:
    return Path(config.output_dir) / config.name


def plan(config: ExperimentConfig) -> Plan:
    root = run_root(config)
    artifacts = root / "artifacts"
    data = stage_artifact(
        artifacts,
        "prepare_data",
        "data",
        {
            "data": config.data.model_dump(),
            "seed": config.seed,
            "code": code_version(STAGE_CODE["prepare_data"]),
        },
    )
    sft_section = config.sft.model_dump(exclude={"deepspeed", "hostfile", "logging_steps"})
    deepspeed_config = json.loads(Path(config.sft.deepspeed).read_text())
    sft = {
        p.name: stage_artifact(
            artifacts,
            "sft",
            p.name,
            {
                # The nominal size only names the model in paper FLOPs: evaluate's key has it.
                "policy": p.model_dump(exclude={"nominal_params"}),
                "sft": sft_section,
                "deepspeed": deepspeed_config,
                "seed": config.seed,
                "data": data.key,
                "code": code_version(STAGE_CODE["sft"]),
            },
        )
        for p in config.policies
    }
    generation = config.generation.model_dump(exclude=EVALUATION_SPEED_SETTINGS)
    label_steps, train_prm = _prm_stages(config, artifacts, data, sft, sft_section, generation)
    evaluate = {
        policy.name: stage_artifact(
            artifacts,
            "evaluate",
            policy.name,
            {
                "generation": generation,
                "evaluation": config.evaluation.model_dump(),
                "format": config.data.format.model_dump(),
                "model": sft[policy.name].key,
                "nominal_params": policy.nominal_params,
                "data": data.key,
                "prm": train_prm.key if config.evaluation.needs_prm else None,
                "code": code_version(STAGE_CODE["evaluate"]),
            },
        )
        for policy in config.policies
    }
    analyze = stage_artifact(
        artifacts,
        "analyze",
        "report",
        {
            "evaluations": {name: art.key for name, art in evaluate.items()},
            "prm": train_prm.key if train_prm is not None else None,
            "analysis": config.analysis.model_dump(),
            "code": code_version(STAGE_CODE["analyze"]),
        },
    )
    return Plan(
        root=root,
        prepare_data=data,
        sft=sft,
        label_steps=label_steps,
        train_prm=train_prm,
        evaluate=evaluate,
        analyze=analyze,
    )


def _prm_stages(
    config: ExperimentConfig,
    artifacts: Path,
    data: StageArtifact,
    sft: dict[str, StageArtifact],
    sft_section: dict,
    generation: dict,
) -> tuple[StageArtifact | None, StageArtifact | None]:
    prm = config.prm
    if prm is None:
        return None, None
    label_steps = None
    if prm.labels is not None:
        policy = config.labelling_policy
        label_steps = stage_artifact(
            artifacts,
            "label_steps",
            policy.name,
            {
                # Resolved: a temperature left to its default and the same one given
                # explicitly make the same labels.
                "labels": {
                    **prm.labels.model_dump(exclude={"temperature", "rollout_temperature"}),
                    "temperatures": config.label_temperatures,
                },
                # The labels have their own sampling settings.
                "generation": {k: v for k, v in generation.items() if k not in SAMPLING},
                "format": config.data.format.model_dump(),
                "model": sft[policy.name].key,
                "completer": sft[config.completer_policy.name].key,
                "data": data.key,
                "seed": config.seed,
                "code": code_version(STAGE_CODE["label_steps"]),
            },
        )
    init = config.prm_init_policy
    train_prm = stage_artifact(
        artifacts,
        "train_prm",
        "prm",
        {
            "prm": prm.model_dump(exclude={"labels", "batch_size", "cache_bytes"}),
            "labels": label_steps.key if label_steps is not None else None,
            "init": sft[init.name].key if init is not None else prm.init_from,
            "launch": {
                k: sft_section[k] for k in ("num_processes", "num_nodes", "use_cpu", "bf16")
            },
            "deepspeed": json.loads(Path(config.sft.deepspeed).read_text()),
            "format": config.data.format.model_dump(),
            "seed": config.seed,
            "code": code_version(STAGE_CODE["train_prm"]),
        },
    )
    return label_steps, train_prm
