"""The PRM-quality study's flow: exact labels (when a PRM learns from them), the learned PRMs
the experiment lacks, every PRM variant's results, then the study's report.

It runs after the experiment (`inferscale run`) and reuses its finished stages by their keys:
it never trains a policy or labels steps by rollouts. Each stage skips itself when its artifact
is complete, so a study that stopped resumes where it was.
"""

from __future__ import annotations

from dataclasses import replace

from prefect import flow
from prefect.logging import get_run_logger

from inferscale.prm_quality_config import load_study
from inferscale.prm_quality_plan import study_plan, unfinished
from inferscale.stages import run_root
from inferscale.tasks.context import RunContext
from inferscale.tasks.exact_labels import exact_labels_task
from inferscale.tasks.prm_quality_report import prm_quality_report_task
from inferscale.tasks.prm_variant import model_dir, prm_variant_task
from inferscale.tasks.train_prm import train_prm_task
from inferscale.tracking.connection import settle_tracking


class ExperimentUnfinished(RuntimeError):
    pass


@flow(name="inferscale-prm-quality", flow_run_name="{study_path}", validate_parameters=False)
def prm_quality_flow(study_path: str) -> str:
    """Run (or resume) the study in `study_path`; return its report's directory."""
    study, config = load_study(study_path)
    config = settle_tracking(config, run_root(config) / "wandb", get_run_logger().warning)
    sp = study_plan(study, config)
    missing = unfinished(sp)
    if missing:
        raise ExperimentUnfinished(
            f"the experiment {config.name} has not finished {', '.join(missing)}; run it first "
            "(inferscale run with its config) and then the study"
        )
    ctx = RunContext(config=config, plan=sp.base, refresh=frozenset())
    labels = {"rollout": str(sp.base.label_steps.path)}
    if sp.exact_labels is not None:
        labels["exact"] = exact_labels_task(ctx, sp.exact_labels)
    init = config.prm_init_policy
    init_dir = model_dir(ctx, init.name) if init is not None else None
    prm_dirs = {}
    for variant in sp.variants:
        if variant.kind != "learned":
            continue
        artifact = sp.prms[variant.name]
        # The training task trains the plan's PRM with the config's seed: this variant's.
        seeded = RunContext(
            config=config.model_copy(update={"seed": variant.seed}),
            plan=replace(sp.base, train_prm=artifact),
            refresh=frozenset(),
        )
        prm_dirs[variant.name] = train_prm_task(seeded, labels[variant.labels], init_dir)
    for variant in sp.variants:
        prm_variant_task(
            ctx, study, variant, sp.evaluations[variant.name], prm_dirs.get(variant.name)
        )
    return prm_quality_report_task(ctx, study, sp)
