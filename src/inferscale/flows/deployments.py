"""The experiment flow as a Prefect deployment: served from this process on a schedule, or
deployed to a work pool whose workers run it, against the user's Prefect API.

A deployment's parameters carry the validated config itself, so its runs need no experiment
file. They still read the DeepSpeed JSON the config names (by its absolute path) and write
under `output_dir`: a worker on another machine needs both at the same paths.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType
from prefect.exceptions import ObjectNotFound
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL
from pydantic import ValidationError

from inferscale.config import check_run_inputs, load_config
from inferscale.flows.parameters import flow_parameters


class PrefectUnavailable(RuntimeError):
    """No Prefect API this command can use, said with the fix."""


def experiment_step(config: str) -> dict:
    """`prefect.yaml`'s build step: the experiment at `config`, validated as `run` validates it
    (a ConfigError otherwise). `{{ experiment.config }}` and `{{ experiment.config_path }}` are
    the deployment's parameters, `{{ experiment.directory }}` the folder `prefect deploy` ran
    in, where its runs start."""
    experiment = load_config(config)
    check_run_inputs(experiment, config)
    return {**flow_parameters(experiment, config), "directory": str(Path.cwd())}


def check_prefect_api() -> None:
    """A PrefectUnavailable unless PREFECT_API_URL names an API that answers (one that
    outlives this command)."""
    url = PREFECT_API_URL.value()
    if not url:
        raise PrefectUnavailable(
            "no Prefect API is set, and a temporary one would vanish with this command: "
            "start a server with `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (in the environment, or with "
            "`prefect config set`)"
        )
    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        raise PrefectUnavailable(
            f"the Prefect API at {url} does not answer ({type(error).__name__}: {error}); start "
            "it with `prefect server start` or correct PREFECT_API_URL"
        )


def check_cron(cron: str | None) -> None:
    """A ValueError naming the expression unless it is a cron schedule Prefect accepts."""
    if cron is None:
        return
    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ValueError(
            f"--cron {cron!r} is not a cron schedule; give five fields, minute hour day month "
            'weekday, e.g. --cron "0 3 * * *" for every day at 03:00'
        ) from None


def check_work_pool(pool: str) -> str:
    """The type of the work pool `pool`; PrefectUnavailable with the command that makes it."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(pool).type
        except ObjectNotFound:
            raise PrefectUnavailable(
                f"the Prefect API has no work pool {pool!r}; create it with `prefect work-pool "
                f"create {pool} --type process` (or a docker or kubernetes pool) and start a "
                f"worker with `prefect worker start --pool {pool}`"
            ) from None


def serve_experiment(parameters: dict, name: str, cron: str | None) -> None:
    """Serve the flow as deployment `<flow>/<name>` until this process is stopped: runs
    scheduled by `cron`, started from the UI or retried there run here, each in a process of
    its own. On stop, Prefect pauses the schedule."""
    from inferscale.flows.pipeline import experiment_flow  # torch and all: after the checks

    # What `flow.serve` does, except that each run starts as `python -m prefect.engine`,
    # which imports the flow by its module: `serve` would pickle the flow object for its
    # runs, and the stage tasks' lock registry (a thread-local) does not pickle.
    runner = Runner(name=name, pause_on_shutdown=True)
    deployment = experiment_flow.to_deployment(
        name=name, cron=cron, parameters=parameters, entrypoint_type=EntrypointType.MODULE_PATH
    )
    runner.add_deployment(deployment)
    print(
        f"serving {experiment_flow.name}/{name}"
        + (f" on the schedule {cron!r}" if cron else "")
        + f"; start a run with `prefect deployment run {experiment_flow.name}/{name}` or "
        "from the UI; stop serving with Ctrl-C",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the runner has stopped
        asyncio.run(runner.start())


def deploy_experiment(
    parameters: dict, name: str, pool: str, cron: str | None, image: str | None
) -> str:
    """Create (or update) deployment `<flow>/<name>` on the work pool `pool` and return its
    full name; its workers import the flow from the installed package (from `image` on a
    docker or kubernetes pool)."""
    from inferscale.flows.pipeline import experiment_flow  # torch and all: after the checks

    experiment_flow.deploy(
        name=name,
        work_pool_name=pool,
        image=image,
        build=False,
        push=False,
        cron=cron,
        parameters=parameters,
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_next_steps=False,
        ignore_warnings=True,
    )
    return f"{experiment_flow.name}/{name}"
