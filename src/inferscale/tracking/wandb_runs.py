"""Start W&B runs for pipeline stages, in-process or in a training subprocess.

Every stage of one experiment logs into the same W&B group (the experiment name), with the
stage as job_type, so the runs of an experiment sit together in the UI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import wandb

from inferscale.tracking.offline import wait_until_written

if TYPE_CHECKING:
    import pandas as pd

Mode = Literal["offline", "online", "disabled"]

logger = logging.getLogger(__name__)

# Settings that keep a run quiet and cheap to start: no console capture, no code/git/pip-freeze
# snapshot, no system-metrics sampler. x_save_requirements alone costs ~0.1 s per init.
# Shared by start_run and wandb_env so in-process and subprocess runs behave the same.
QUIET_SETTINGS: dict[str, bool | str] = {
    "silent": True,
    "console": "off",
    "save_code": False,
    "disable_git": True,
    "x_disable_stats": True,
    "x_save_requirements": False,
}


@dataclass(frozen=True)
class TrackingSettings:
    project: str
    group: str  # the experiment name: one W&B group per experiment
    entity: str | None = None
    mode: Mode = "offline"


def start_run(
    settings: TrackingSettings, stage: str, name: str, config: dict[str, Any], dir: Path
) -> wandb.Run:
    """Start a run for one stage; its files go under `dir/wandb/`.

    Stages start their run once their work is done, so W&B must not fail them: a run that
    cannot start online (a timeout, a refused key) is started offline instead, and one that
    cannot start at all is a disabled run, whose calls do nothing; each with a warning."""
    fallbacks: dict[Mode, Mode] = {"online": "offline", "offline": "disabled"}
    mode = settings.mode
    while True:
        try:
            return _init(settings, stage, name, config, dir, mode)
        except Exception as err:  # whatever wandb raises: the server, the key, the disk
            if mode not in fallbacks:
                raise
            logger.warning(
                "W&B run %s could not start %s (%s); it runs %s instead",
                name,
                mode,
                _one_line(err),
                fallbacks[mode],
            )
            mode = fallbacks[mode]


def _init(
    settings: TrackingSettings,
    stage: str,
    name: str,
    config: dict[str, Any],
    dir: Path,
    mode: Mode,
) -> wandb.Run:
    return wandb.init(
        project=settings.project,
        entity=settings.entity,
        group=settings.group,
        job_type=stage,
        name=name,
        config=config,
        dir=dir,
        mode=mode,
        # Stages may run concurrently in one process: never hand back another stage's run.
        reinit="create_new",
        settings=wandb.Settings(**QUIET_SETTINGS),
    )


def finish_run(run: wandb.Run) -> None:
    """Finish the run; offline, also wait until its log is on disk so it can be read back.
    A failure is a warning: the stage's work is done by then."""
    try:
        wandb_file = Path(run.settings.sync_file) if run.offline else None
        run.finish()
        if wandb_file:
            wait_until_written(wandb_file)
    except Exception as err:
        logger.warning("W&B run %s did not finish cleanly: %s", run.name, _one_line(err))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def wandb_env(settings: TrackingSettings, stage: str, name: str, dir: Path) -> dict[str, str]:
    """WANDB_* variables that make a subprocess's own wandb.init (e.g. the HF Trainer's
    WandbCallback) create the same kind of run as `start_run`."""
    env = {
        "WANDB_MODE": settings.mode,
        "WANDB_PROJECT": settings.project,
        "WANDB_RUN_GROUP": settings.group,
        "WANDB_JOB_TYPE": stage,
        "WANDB_NAME": name,
        "WANDB_DIR": str(dir.resolve()),  # the subprocess may run in another cwd
        # Read by the HF WandbCallback itself: never upload checkpoints as model artifacts
        # and never hook gradients, whatever the parent environment says.
        "WANDB_LOG_MODEL": "false",
        "WANDB_WATCH": "false",
    }
    if settings.entity:
        env["WANDB_ENTITY"] = settings.entity
    for key, value in QUIET_SETTINGS.items():
        env[f"WANDB_{key.upper()}"] = str(value).lower()
    return env


def log_table(run: wandb.Run, key: str, frame: pd.DataFrame) -> None:
    run.log({key: wandb.Table(dataframe=frame)})


def log_image(run: wandb.Run, key: str, path: Path) -> None:
    run.log({key: wandb.Image(str(path))})
