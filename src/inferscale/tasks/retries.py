"""Each stage task with the retries its experiment sets for it (`retries.<stage>`)."""

from __future__ import annotations

from typing import Any

from prefect import Task

from inferscale.config import ExperimentConfig
from inferscale.locks import StageBusy


def worth_retrying(task: Task, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: not a stage that another run is computing, which holds it
    for as long as that stage takes, far beyond a retry's delay."""
    return not isinstance(state.data, StageBusy)


def with_retries(stage_task: Task, config: ExperimentConfig) -> Task:
    """`stage_task` (named after its stage) retried as `config.retries` says for that stage."""
    setting = getattr(config.retries, stage_task.name)
    return stage_task.with_options(
        retries=setting.count,
        retry_delay_seconds=setting.delay_seconds,
        retry_condition_fn=worth_retrying,
    )
