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

    The output folder is made absolute here, where the user gave it: a worker runs each flow
    in a folder of its own (a process worker, in a temporary one that it deletes)."""
    output_dir = str(Path(config.output_dir).expanduser().resolve())
    return {
        "config": config.model_copy(update={"output_dir": output_dir}).model_dump(mode="json"),
        "config_path": config_path,
        "refresh": list(refresh or []),
        "only": only,
        "policy": policy,
    }
