"""The experiment flow's parameters, built without importing Prefect."""

from __future__ import annotations

from pathlib import Path

from inferscale.config import ExperimentConfig


def flow_parameters(
    config: ExperimentConfig,
    config_path: str,
    refresh: list[str] | None = None,
    only: str | None = None,
    policy: str | None = None,
) -> dict:
    """The flow's parameters for a validated config: the config itself, as JSON, so that the
    flow needs no file to run (a worker on another machine gets it whole), and its path (with
    its `--set` overrides, `config_source`), which names the run and its errors; `only` (and
    `policy`) run one stage alone.

    The output folder and local checkpoint folders are made absolute here, where the user gave
    them: a worker runs each flow in a folder of its own (a process worker, in a temporary one
    that it deletes)."""
    output_dir = str(Path(config.output_dir).expanduser().resolve())
    policies = [
        p.model_copy(update={"checkpoint": absolute_if_local(p.checkpoint)})
        for p in config.policies
    ]
    update = {"output_dir": output_dir, "policies": policies}
    if config.prm is not None and config.prm.given:
        checkpoint = absolute_if_local(config.prm.checkpoint)
        update["prm"] = config.prm.model_copy(update={"checkpoint": checkpoint})
    return {
        "config": config.model_copy(update=update).model_dump(mode="json"),
        "config_path": config_path,
        "refresh": list(refresh or []),
        "only": only,
        "policy": policy,
    }


def absolute_if_local(reference: str | None) -> str | None:
    """A checkpoint folder's absolute path; a hub id (or None) as it is."""
    if reference is None or not Path(reference).expanduser().is_dir():
        return reference
    return str(Path(reference).expanduser().resolve())
