"""The PRM-quality study's stages and the artifact each maps to, next to the experiment's own.

The study's artifacts live in the experiment's artifacts folder and are keyed like its stages
(settings, inputs' keys, code), so that they are found again by any later run:
- `exact_labels`: the experiment's step-labelled solutions, relabelled by exact step validity;
- `train_prm` (the experiment's stage): one per learned PRM the experiment lacks, keyed as the
  experiment's own PRM with its training seed or its labels changed, so the experiment's seed on
  its rollout labels *is* the experiment's PRM;
- `prm_quality`: one per PRM variant, every policy's PRM-dependent results with it;
- `prm_quality_report`: the study's analysis and report.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferscale.artifacts import StageArtifact, stage_artifact
from inferscale.config import ExperimentConfig
from inferscale.prm_quality_config import PRMQualityConfig, balance_width
from inferscale.stage_code import PACKAGE_ROOT, stage_code
from inferscale.stages import Plan, plan

EXACT_LABELS = "exact_labels"
VARIANT_STAGE = "prm_quality"
REPORT_STAGE = "prm_quality_report"
STUDY_STAGES = (EXACT_LABELS, VARIANT_STAGE, REPORT_STAGE)


@dataclass(frozen=True)
class Variant:
    """A PRM put behind the strategies: learned (on rollout or exact labels, with a seed), a
    noisy oracle with a set AUC, or the exact oracle (AUC 1)."""

    name: str
    kind: str  # "learned" | "noisy_oracle" | "oracle"
    labels: str | None = None  # a learned PRM's labels: "rollout" | "exact"
    seed: int | None = None  # a learned PRM's training seed, an oracle's noise seed
    auc: float | None = None  # an oracle's set AUC against exact validity


def variants(study: PRMQualityConfig) -> list[Variant]:
    """The study's PRMs: learned ones first (rollout labels, then exact), then the oracles by
    AUC."""
    out = [
        Variant(f"learned-{labels}-seed{seed}", "learned", labels=labels, seed=seed)
        for labels in ("rollout", "exact")
        for seed in getattr(study.learned, labels)
    ]
    for auc in study.oracles.aucs:
        if auc == 1.0:
            out.append(Variant("oracle", "oracle", seed=study.oracles.seed, auc=1.0))
        else:
            out.append(Variant(f"noisy-{auc:g}", "noisy_oracle", seed=study.oracles.seed, auc=auc))
    return out


@dataclass(frozen=True)
class StudyPlan:
    base: Plan
    variants: list[Variant]
    exact_labels: StageArtifact | None
    prms: dict[str, StageArtifact]  # learned variant -> its PRM's training
    evaluations: dict[str, StageArtifact]  # variant -> its results
    report: StageArtifact

    def all(self) -> list[StageArtifact]:
        labels = [self.exact_labels] if self.exact_labels is not None else []
        return [*labels, *self.prms.values(), *self.evaluations.values(), self.report]


def study_plan(
    study: PRMQualityConfig, config: ExperimentConfig, code_root=PACKAGE_ROOT
) -> StudyPlan:
    base = plan(config, code_root)
    assert base.label_steps is not None and base.train_prm is not None
    artifacts = base.root / "artifacts"
    fmt = config.data.format
    all_variants = variants(study)
    exact = None
    if study.learned.exact:
        exact = stage_artifact(
            artifacts,
            EXACT_LABELS,
            base.label_steps.label,
            {
                "modulus": config.data.arithmetic.modulus,
                "data": {"format": fmt.plain_settings()},
            },
            {base.label_steps.name: base.label_steps.key},
            stage_code(EXACT_LABELS, code_root),
        )
    own = base.train_prm.material
    prms = {}
    for v in all_variants:
        if v.kind != "learned":
            continue
        inputs = dict(own["inputs"])
        if v.labels == "exact":
            inputs.pop(base.label_steps.name)
            inputs[exact.name] = exact.key
        prms[v.name] = stage_artifact(
            artifacts,
            base.train_prm.stage,
            f"prm-{v.labels}-seed{v.seed}",
            {**own["settings"], "seed": v.seed},
            inputs,
            own["code"],
        )
    # The experiment's own PRM keeps its directory: the same key names the same training.
    for name, artifact in prms.items():
        if artifact.key == base.train_prm.key:
            prms[name] = base.train_prm
    settings = {
        "strategies": study.strategies,
        "balance": {
            "temperatures": study.balance.temperatures,
            "width": balance_width(study, config) if study.balance.temperatures else None,
        },
    }
    evaluated = {e.name: e.key for e in base.evaluate.values()}
    evaluations = {}
    for v in all_variants:
        inputs = {**evaluated, base.label_steps.name: base.label_steps.key}
        variant: dict = {"kind": v.kind, "seed": v.seed}
        if v.kind == "learned":
            inputs["prm"] = prms[v.name].key
            variant["labels"] = v.labels
        else:
            variant["auc"] = v.auc
            variant["flops"] = study.oracles.flops
            if study.oracles.flops == "prm":
                inputs["prm"] = base.train_prm.key  # the PRM whose reading it costs
        evaluations[v.name] = stage_artifact(
            artifacts,
            VARIANT_STAGE,
            v.name,
            {**settings, "variant": variant},
            inputs,
            stage_code(VARIANT_STAGE, code_root),
        )
    report = stage_artifact(
        artifacts,
        REPORT_STAGE,
        "report",
        {"accounting": study.accounting},
        {**evaluated, **{a.name: a.key for a in evaluations.values()}},
        stage_code(REPORT_STAGE, code_root),
    )
    return StudyPlan(base, all_variants, exact, prms, evaluations, report)


def unfinished(sp: StudyPlan) -> list[str]:
    """The experiment's stages the study reads that are not finished."""
    base = sp.base
    needed = [base.prepare_data, *base.sft.values(), base.label_steps, base.train_prm]
    needed += list(base.evaluate.values())
    return [a.name for a in needed if a is not None and not a.complete]
