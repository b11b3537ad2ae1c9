"""What every stage task gets: the config, the plan of artifacts, the stages to recompute."""

from __future__ import annotations

from dataclasses import dataclass

from prefect.logging import get_run_logger

from inferscale.artifacts import StageArtifact
from inferscale.config import ExperimentConfig
from inferscale.stages import Plan
from inferscale.tracking.wandb_runs import TrackingSettings


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

        Otherwise prepare its directory: cleared when refreshed or when a partial result cannot
        be resumed, kept when the stage resumes from what it had written.
        """
        logger = get_run_logger()
        if artifact.stage in self.refresh:
            logger.info("refreshing %s: recomputing %s", artifact.stage, artifact.path)
            artifact.clear()
        elif artifact.complete:
            logger.info("cached: %s (%s)", artifact.stage, artifact.path)
            return True
        elif artifact.path.exists() and not resumable:
            logger.info("discarding the unfinished %s at %s", artifact.stage, artifact.path)
            artifact.clear()
        artifact.path.mkdir(parents=True, exist_ok=True)
        artifact.mark_started()
        return False
