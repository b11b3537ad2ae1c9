"""Ray for `execution.engine: ray`: one Ray per run, reached through prefect-ray's
RayTaskRunner, and shards submitted to it as Prefect tasks, each asking for its resources, and
each submitted again when its worker dies.

Every worker must report to the run's own Prefect API: a worker that finds none starts a
temporary server of its own on the same database, and the run crawls or fails. The API is the
user's (`PREFECT_API_URL`) or the temporary one this process started, and reaches the workers
both in Prefect's settings (serialized with each task) and in their environment. Workers compute
with the run's CPU numerics (`inferscale.numerics`), whatever their own environment says.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inferscale.config import ExperimentConfig
from inferscale.numerics import MODE_ENV, PIN_NAMES
from inferscale.shards import assign, merge_shards

# Ray's session folder holds Unix sockets, whose paths must stay under ~107 bytes.
LOCAL_TEMP_DIR = "/tmp/ray"


class ShardFailed(RuntimeError):
    pass


def prefect_api_url() -> str:
    """The Prefect API this process reports to: the configured one, or the temporary server
    Prefect starts for a process without one (started now if it is not yet)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    return server.api_url


def worker_env(api_url: str, local: bool) -> dict[str, str]:
    """What every worker's environment must hold: the run's API and CPU numerics; on a local
    Ray, where the workers share this machine's Prefect home, where Prefect keeps results."""
    env = {"PREFECT_API_URL": api_url, MODE_ENV: os.environ.get(MODE_ENV, "portable")}
    env.update({name: os.environ[name] for name in PIN_NAMES if name in os.environ})
    home = os.environ.get("PREFECT_HOME")
    if local and home:
        # Prefect 3.6 keeps these under ~/.prefect whatever PREFECT_HOME says.
        env.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(Path(home) / "storage"))
        env.setdefault("PREFECT_SERVER_MEMO_STORE_PATH", str(Path(home) / "memo_store.toml"))
    return env


def _new_runner(config: ExperimentConfig):
    from prefect_ray.task_runners import RayTaskRunner

    ray_cfg = config.execution.ray
    local = ray_cfg.address is None
    runtime_env = {"env_vars": worker_env(prefect_api_url(), local)}
    if local:
        # Token authentication (Ray 2.60's default) writes ~/.ray/auth_token: not for a Ray that
        # lives and dies with this run.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        init = {
            "address": "local",
            "include_dashboard": False,
            "_temp_dir": LOCAL_TEMP_DIR,
            "runtime_env": runtime_env,
        }
        return RayTaskRunner(init_kwargs=init)
    # "auto" must find a running cluster, not start one: RayTaskRunner would call a bare
    # ray.init() for it.
    return RayTaskRunner(init_kwargs={"address": ray_cfg.address, "runtime_env": runtime_env})


# The stages that deal their questions to shards.
SHARDED_STAGES = ("label_steps", "evaluate")
# The modules a shard's task runs: a worker that imports them before its first shard arrives
# (torch, transformers and Prefect take seconds) starts that shard at once.
SHARD_MODULES = ("inferscale.tasks.evaluate", "inferscale.tasks.label_steps")

_lock = threading.Lock()
_state: dict[str, Any] = {"runner": None, "users": 0, "holders": 0, "failed": None}


def _import_shard_modules() -> None:
    import importlib

    for module in SHARD_MODULES:
        importlib.import_module(module)


def _start(config: ExperimentConfig) -> Any:
    """The run's runner, Ray started with it if it is not yet, and a worker warmed per shard.
    Called with the lock held: a stage that needs Ray meanwhile waits for it."""
    if _state["runner"] is None:
        import ray

        runner = _new_runner(config)
        runner.__enter__()
        _state["runner"] = runner
        warm = ray.remote(**{k: v for k, v in shard_options(config).items() if k != "max_retries"})
        for _ in range(config.execution.ray.shards):
            warm(_import_shard_modules).remote()
    return _state["runner"]


def _release() -> None:
    if _state["users"] == 0 and _state["holders"] == 0 and _state["runner"] is not None:
        runner, _state["runner"] = _state["runner"], None
        runner.__exit__(None, None, None)


@contextmanager
def shard_runner(config: ExperimentConfig) -> Iterator[Any]:
    """The run's RayTaskRunner, started (Ray with it) on first use and shared by the stages
    running at the same time; Ray stops when the last of them is done, or with the run where
    the flow holds it (`hold_ray`)."""
    with _lock:
        if _state["failed"] is not None:
            failed, _state["failed"] = _state["failed"], None
            raise failed
        runner = _start(config)
        _state["users"] += 1
    try:
        yield runner
    finally:
        with _lock:
            _state["users"] -= 1
            _release()


@contextmanager
def hold_ray(start: ExperimentConfig | None = None) -> Iterator[None]:
    """Keep the Ray a stage starts until the block ends (the run), so that the next stage does
    not start another. With a config (the run will shard a stage), start it now, its workers
    importing the shards' code while the run gets to that stage. (Ray starts from the main
    thread only: from another, its driver fails to reach the GCS it started.)"""
    with _lock:
        _state["holders"] += 1
        if start is not None:
            try:
                _start(start)
            except Exception as err:  # raised to the first stage that needs Ray
                _state["failed"] = err
    try:
        yield
    finally:
        with _lock:
            _state["holders"] -= 1
            _state["failed"] = None
            _release()


def shard_options(config: ExperimentConfig) -> dict[str, Any]:
    """What each shard asks of Ray. Ray does not re-run a task whose worker died (max_retries=0):
    `run_shards` submits it again as a new task run, which Prefect shows."""
    ray_cfg = config.execution.ray
    return {
        "num_cpus": ray_cfg.num_cpus_per_shard,
        "num_gpus": ray_cfg.num_gpus_per_shard,
        "max_retries": 0,
    }


def _mark_crashed(task_run_id, err: BaseException) -> None:
    """A dead worker never reports its task run's end: record it for the UI."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_task_run_state(
                task_run_id, Crashed(message=f"worker lost: {err}"), force=True
            )
    except Exception:  # the record is a courtesy; the shard is retried either way
        pass


def run_shards(
    runner,
    task,
    parameters: list[dict],
    options: dict[str, Any],
    retries: int,
    log: Callable[[str], None],
) -> list[Any]:
    """Run `task` once per parameter set on Ray, each with `options`; a shard that fails (its
    worker died, or it raised) is submitted again as soon as it fails, up to `retries` times,
    while the others go on. Returns the results in order; raises ShardFailed once a shard has
    failed `retries` + 1 times, after the others have finished."""
    import ray
    from prefect.context import TaskRunContext
    from prefect_ray.context import remote_options

    def submit(i: int):
        # Out of the calling task's run context: Prefect would serialize it for the worker,
        # and a stage task's body holds its locks in a thread-local, which does not pickle.
        token = TaskRunContext.__var__.set(None)
        try:
            with remote_options(**options):
                return runner.submit(task, parameters[i])
        finally:
            TaskRunContext.__var__.reset(token)

    running = {i: submit(i) for i in range(len(parameters))}
    failures = {i: 0 for i in running}
    results: dict[int, Any] = {}
    lost: dict[int, BaseException] = {}
    while running:
        refs = {f.wrapped_future: i for i, f in running.items()}
        ready, _ = ray.wait(list(refs), num_returns=1)
        i = refs[ready[0]]
        future = running.pop(i)
        try:
            results[i] = future.result()
            continue
        except BaseException as err:  # noqa: BLE001 - any failure of a shard is retried
            if isinstance(err, ray.exceptions.RayError):
                _mark_crashed(future.task_run_id, err)
            failures[i] += 1
            if failures[i] > retries:
                lost[i] = err
                continue
            log(f"shard {i} failed ({type(err).__name__}: {err}); retry {failures[i]} of {retries}")
            running[i] = submit(i)
    if lost:
        lines = "; ".join(f"shard {i}: {type(e).__name__}: {e}" for i, e in sorted(lost.items()))
        raise ShardFailed(
            f"{len(lost)} of {len(parameters)} shard(s) failed {retries + 1} time(s): {lines}. "
            "What every shard wrote is kept; run again to resume"
        )
    return [results[i] for i in range(len(parameters))]


def deal_to_shards(
    config: ExperimentConfig,
    stage_dir: Path,
    order: list[str],
    lacking: Callable[[], set[str]],
    task,
    parameters: dict,
    retries: int,
    logger,
    prefix: str,
) -> None:
    """Fold what an earlier run's shards wrote into the stage's stores, then deal the questions
    some store still `lacking()` to the configured shards, each `task(**parameters, stage_dir,
    shard, ids)` on Ray, and fold what they wrote (in question `order`), also when some failed.
    Logs to `logger`, each line after `prefix`."""
    merge_shards(stage_dir, order)
    missing = lacking()
    pending = [qid for qid in order if qid in missing]
    if not pending:
        return
    shards = assign(pending, config.execution.ray.shards)
    logger.info("%s%d questions to do, on %d shard(s) of Ray", prefix, len(pending), len(shards))
    each = [
        {**parameters, "stage_dir": str(stage_dir), "shard": k, "ids": ids}
        for k, ids in enumerate(shards)
    ]

    def warn(message: str) -> None:
        logger.warning("%s%s", prefix, message)

    try:
        with shard_runner(config) as runner:
            run_shards(runner, task, each, shard_options(config), retries, warn)
    finally:
        merge_shards(stage_dir, order)


def set_shard_threads(config: ExperimentConfig) -> None:
    """torch's threads in a shard: `generation.threads` where set (the local run's, so the
    numbers are the same), else the CPUs the shard asked for. Ray reuses workers, and sets
    OMP_NUM_THREADS only as they start."""
    import torch

    cpus = max(1, int(config.execution.ray.num_cpus_per_shard))
    torch.set_num_threads(config.generation.threads or cpus)
