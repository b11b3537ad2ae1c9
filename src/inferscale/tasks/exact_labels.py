from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from inferscale.artifacts import StageArtifact
from inferscale.data.prepare import step_format
from inferscale.data.step_labels import read_step_labels, write_step_labels
from inferscale.data.step_validity import exact_labels, label_agreement
from inferscale.tasks.context import RunContext, stage_body
from inferscale.tasks.label_steps import HELDOUT_FILE, LABELS_FILE


@task(name="exact_labels", cache_policy=NO_CACHE)
@stage_body
def exact_labels_task(ctx: RunContext, artifact: StageArtifact) -> str:
    """The experiment's step-labelled solutions with every label replaced by exact step
    validity: a PRM trained on them learns from the same solutions at the same cost."""
    if ctx.reuse(artifact):
        return str(artifact.path)
    assert ctx.plan.label_steps is not None and ctx.config.data.arithmetic is not None
    modulus = ctx.config.data.arithmetic.modulus
    answer_phrase = step_format(ctx.config.data).answer_phrase
    agreement = {}
    for name in (LABELS_FILE, HELDOUT_FILE):
        records = read_step_labels(ctx.plan.label_steps.path / name)
        relabelled = exact_labels(records, modulus, answer_phrase)
        write_step_labels(artifact.path / name, relabelled)
        agreement[name] = label_agreement(
            [r.hard_labels for r in records], [r.hard_labels for r in relabelled]
        )
    get_run_logger().info(
        "exact labels: the rollout labels agree with exact validity on %.1f%% of %d steps",
        100 * agreement[LABELS_FILE]["rate"],
        agreement[LABELS_FILE]["steps"],
    )
    artifact.mark_complete({"agreement": agreement})
    return str(artifact.path)
