"""What every stage task gets: the config, the plan of artifacts, the stages to recompute."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from prefect.logging import get_run_logger

from inferscale.artifacts import StageArtifact
from inferscale.config import ExperimentConfig
from inferscale.locks import DirectoryLock
from inferscale.stages import Plan
from inferscale.tracking.wandb_runs import TrackingSettings

P = ParamSpec("P")
R = TypeVar("R")
# The artifact locks the running task body holds (tasks run one at a time per thread).
_held = threading.local()


def stage_body(fn: Callable[P, R]) -> Callable[P, R]:
    """A task's body: the artifacts it claims with `RunContext.reuse` stay locked until it
    returns or raises."""

    @functools.wraps(fn)
    def body(*args: P.args, **kwargs: P.kwargs) -> R:
        outer = getattr(_held, "locks", None)
        _held.locks = []
        try:
            return fn(*args, **kwargs)
        finally:
            for lock in _held.locks:
                lock.release()
            _held.locks = outer

    return body


@dataclass(frozen=True)
class RunContext:
    config: ExperimentConfig
    plan: Plan
    refresh: frozenset[str]

    @property
    def tracking(self) -> TrackingSettings:
        t = self.config.tracking
        return TrackingSettings(
            project=t.project, group=self.config.name, entity=t.entity, mode=t.mode
        )

    def reuse(self, artifact: StageArtifact, *, resumable: bool = False) -> bool:
        """True if the stage's finished artifact can be used as it is.

        Otherwise lock it for this task (another run computing it stops this one with a
        StageBusy naming that run) and prepare its directory: cleared when refreshed, damaged,
        or holding a partial result that cannot be resumed; kept when the stage resumes from
        what it had written.
        """
        logger = get_run_logger()
        refreshed = artifact.stage in self.refresh
        if not refreshed and artifact.complete and not artifact.damage():
            logger.info("cached: %s (%s)", artifact.stage, artifact.path)
            return True
        held = getattr(_held, "locks", None)
        if held is None:
            raise RuntimeError("RunContext.reuse is called from a @stage_body task only")
        lock = DirectoryLock(artifact.path, f"{artifact.stage} at {artifact.path}")
        lock.acquire()
        held.append(lock)
        damage = artifact.damage() if artifact.complete else []
        if refreshed:
            logger.info("refreshing %s: recomputing %s", artifact.stage, artifact.path)
            artifact.clear()
        elif artifact.complete and not damage:  # another run finished it meanwhile
            logger.info("cached: %s (%s)", artifact.stage, artifact.path)
            return True
        elif damage:
            logger.warning(
                "the finished %s at %s is damaged (%s): computing it again",
                artifact.stage,
                artifact.path,
                "; ".join(damage[:3]) + (f"; {len(damage) - 3} more" if len(damage) > 3 else ""),
            )
            artifact.clear()
        elif artifact.path.exists() and not resumable:
            logger.info("discarding the unfinished %s at %s", artifact.stage, artifact.path)
            artifact.clear()
        artifact.path.mkdir(parents=True, exist_ok=True)
        artifact.mark_started()
        return False
