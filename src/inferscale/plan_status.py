"""Where each stage of a plan stands, and why the next run would compute it (again): read from the
artifact directories alone, so it writes nothing and needs no Prefect."""

from __future__ import annotations

import json

from inferscale.artifacts import StageArtifact
from inferscale.config import ExperimentConfig
from inferscale.data.prepare import TEST_FILE
from inferscale.evaluation import planned_stores, store_path
from inferscale.shards import written_ids
from inferscale.stages import Plan

# A Python upgrade or a shared module changes many modules' hashes: name a few.
SHOWN_CHANGES = 6


def state_of(artifact: StageArtifact) -> tuple[str, list[str]]:
    """done, damaged (with what is wrong), partial (a directory without its marker) or -."""
    if artifact.complete:
        damage = artifact.damage()
        return ("damaged", damage) if damage else ("done", [])
    return ("partial" if artifact.path.exists() else "-"), []


def _leaves(value, prefix: str = "") -> dict[str, object]:
    """A nested mapping's values by dotted path (lists are values)."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    out: dict[str, object] = {}
    for key, item in value.items():
        out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _shown(value) -> str:
    return "(none)" if value is None else json.dumps(value)


def key_changes(before: dict, now: dict) -> list[str]:
    """What differs between two keys' components (`StageArtifact.material`): settings with
    their values, inputs and code modules by name."""
    out = []
    old, new = _leaves(before.get("settings", {})), _leaves(now.get("settings", {}))
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) != new.get(name):
            out.append(f"setting {name}: {_shown(old.get(name))} -> {_shown(new.get(name))}")
    old, new = before.get("inputs", {}), now.get("inputs", {})
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            out.append(f"input {name} is new")
        elif name not in new:
            out.append(f"input {name} is no longer read")
        elif old[name] != new[name]:
            out.append(f"input {name} changed")
    old, new = before.get("code", {}), now.get("code", {})
    modules = sorted(m for m in old.keys() | new.keys() if old.get(m) != new.get(m))
    if modules:
        shown = ", ".join(modules[:SHOWN_CHANGES])
        more = f" and {len(modules) - SHOWN_CHANGES} more" if len(modules) > SHOWN_CHANGES else ""
        out.append(f"code changed: {shown}{more}")
    return out


def why_run(artifact: StageArtifact, refreshed: bool = False) -> list[str]:
    """Why the next run computes `artifact` (nothing when it would reuse it): `--refresh`, its
    damage, or what changed since its stage last finished under another key."""
    if refreshed:
        return ["--refresh"]
    state, damage = state_of(artifact)
    if state == "done":
        return []
    if state == "damaged":
        return [f"damaged: {'; '.join(damage)}"]
    before = artifact.finished_before()
    if before is None:
        return ["never run" if state == "-" else "never finished"]
    material = before.recorded_material()
    if material is None:
        return [f"last finished as {before.path.name}, which recorded no key components"]
    return key_changes(material, artifact.material) or [
        f"key changed: {before.key} -> {artifact.key} (same components: a new Python version?)"
    ]


def evaluation_progress(config: ExperimentConfig, plan: Plan, artifact: StageArtifact) -> str:
    """How far a partial evaluation got: questions written of those to write, per store."""
    data = plan.prepare_data
    if not data.complete:
        return "its data is not prepared yet"
    cfg = config.evaluation
    with (data.path / TEST_FILE).open() as f:
        questions = sum(1 for _ in f)
    questions = min(questions, cfg.limit or questions)
    searched = min(questions, cfg.search.limit or questions)
    stores = planned_stores(cfg.strategies, cfg.pool_size, cfg.search.budgets, questions, searched)
    parts, written, total = [], 0, 0
    for name, wanted in stores.items():
        done = min(len(written_ids(artifact.path, store_path(artifact.path, name).name)), wanted)
        written, total = written + done, total + wanted
        parts.append(f"{name} {done}/{wanted}")
    return f"{written}/{total} questions written ({', '.join(parts)})"


def plan_lines(config: ExperimentConfig, plan: Plan, refresh: frozenset[str]) -> list[str]:
    """The plan as `run --dry-run` prints it: each stage cached, or run and why."""
    lines = []
    for artifact in plan.all():
        reasons = why_run(artifact, artifact.stage in refresh)
        if not reasons:
            lines.append(f"  cached  {artifact.name:<22} {artifact.path}")
            continue
        if artifact.stage not in refresh and is_partial_evaluation(artifact):
            reasons.append(f"resumes: {evaluation_progress(config, plan, artifact)}")
        lines.append(f"     run  {artifact.name:<22} {artifact.path}")
        lines.extend(f"{'':>8}  {'':<22} {reason}" for reason in reasons)
    return lines


def is_partial_evaluation(artifact: StageArtifact) -> bool:
    return artifact.stage == "evaluate" and state_of(artifact)[0] == "partial"
