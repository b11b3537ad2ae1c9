"""The experiment served and deployed on a real Prefect server, as a user runs them: `inferscale
serve` and `inferscale deploy` (each a process of its own), a process worker, flow runs started
and retried through the Prefect API as the UI does; and the refusals that come before any of it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pipeline_config import run_processes, tiny_config, write_config

from inferscale.artifacts import COMPLETE_MARKER
from inferscale.config import load_config
from inferscale.stages import plan

# The whole tiny pipeline takes a few minutes on 2 cores; a flow run gets this long.
FLOW_RUN_TIMEOUT_S = 900


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A command in a session of its own (as a user starts it), its output in `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def cli(*args: str, env: dict, log: Path) -> subprocess.Popen:
    return spawn([sys.executable, "-m", "inferscale.cli", *args], env, log)


def cli_refusal(*args: str, env: dict) -> str:
    """The one line a refused command prints; it must exit with code 2."""
    done = subprocess.run(
        [sys.executable, "-m", "inferscale.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def no_api_env(workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(workdir / "prefect")}


def test_serve_without_a_prefect_api_is_refused_before_any_work(tmp_path):
    config_path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    line = cli_refusal("serve", str(config_path), env=no_api_env(tmp_path))
    assert "prefect server start" in line and "PREFECT_API_URL" in line
    assert not (tmp_path / "runs").exists()


def test_a_bad_cron_schedule_is_refused_naming_it(tmp_path):
    config_path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    line = cli_refusal(
        "deploy", str(config_path), "--pool", "p", "--cron", "0 3 * *", env=no_api_env(tmp_path)
    )
    assert "--cron '0 3 * *' is not a cron schedule" in line


def test_prefect_yaml_build_step_gives_the_validated_config(tmp_path, monkeypatch):
    import yaml

    from inferscale.config import parse_config
    from inferscale.flows.deployments import experiment_step

    repo = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((repo / "prefect.yaml").read_text())
    (step,) = spec["build"]
    (function,) = step
    assert function == "inferscale.flows.deployments.experiment_step"
    monkeypatch.chdir(repo)
    outputs = experiment_step(step[function]["config"])
    assert outputs["config_path"] == "configs/default.yaml"
    assert outputs["directory"] == str(repo)
    # What the runs get parses as the config file does, with the output folder made absolute.
    config = parse_config(outputs["config"], source="configs/default.yaml")
    assert config == load_config(repo / "configs" / "default.yaml").model_copy(
        update={"output_dir": str(repo / "runs")}
    )
    (deployment,) = spec["deployments"]
    assert deployment["parameters"] == {
        "config": "{{ experiment.config }}",
        "config_path": "{{ experiment.config_path }}",
    }


@dataclass
class Server:
    url: str
    workdir: Path
    env: dict  # for every process that talks to this server
    started: list[subprocess.Popen]

    @contextmanager
    def client(self):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(updates={PREFECT_API_URL: self.url}),
            get_client(sync_client=True) as client,
        ):
            yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """`prefect server start` on a free localhost port with its own PREFECT_HOME; at the end,
    it and every process the tests started are stopped, and none of them is left."""
    workdir = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    prefect_dir = workdir / "prefect"
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_dir),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(prefect_dir / "storage"),
        "PREFECT_SERVER_MEMO_STORE_PATH": str(prefect_dir / "memo_store.toml"),
        # Scheduled and retried runs are picked up within seconds, not the default 10.
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    process = spawn(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        {k: v for k, v in env.items() if k != "PREFECT_API_URL"},
        workdir / "server.log",
    )
    started = [process]
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (workdir / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not answer in 180 s"
            time.sleep(0.5)
        yield Server(url=url, workdir=workdir, env=env, started=started)
    finally:
        for p in reversed(started):
            stop(p)
        deadline = time.monotonic() + 30
        while (left := run_processes(workdir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for p in left:
            p.kill()
        assert not left, [" ".join(p.cmdline()[:6]) for p in left]


def wait_for(what: str, check, timeout_s: float, alive: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if alive is not None:
            assert alive.poll() is None, f"{alive.args[:4]} exited ({alive.returncode})"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(1)


def deployment(server: Server, name: str):
    from prefect.exceptions import ObjectNotFound

    with server.client() as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def finished_run(server: Server, run_id, retried_from=None):
    """The flow run once it is in a final state (other than `retried_from`, the one it was
    in when it was retried)."""
    with server.client() as client:
        run = client.read_flow_run(run_id)
    if run.state is None or not run.state.is_final():
        return None
    if retried_from is not None and run.state.id == retried_from.id:
        return None
    return run


def markers(config_path: Path) -> dict[str, int]:
    """When each finished stage of the experiment was marked complete."""
    return {
        str(a.path): (a.path / COMPLETE_MARKER).stat().st_mtime_ns
        for a in plan(load_config(config_path)).all()
        if a.complete
    }


WORKER_POOL = "workers"


def process_pool(server: Server) -> str:
    """The process work pool `local` (the one prefect.yaml names), made if missing."""
    from prefect.client.schemas.actions import WorkPoolCreate

    # The server fills in the process pool's job template.
    pool = WorkPoolCreate(name="local", type="process")
    with server.client() as client:
        client.create_work_pool(pool, overwrite=True)
    return pool.name


def tiny(server: Server, name: str, **overrides) -> Path:
    # Both tests write into one output folder: the second reuses the first's models.
    overrides = {"tracking.mode": "disabled", **overrides}
    config = tiny_config(server.workdir / "runs", **overrides)
    return write_config(server.workdir / f"{name}.yaml", config)


@pytest.mark.slow
def test_a_served_experiment_runs_when_triggered_and_writes_its_artifacts(server):
    from inferscale.flows.parameters import flow_parameters

    config_path = tiny(server, "served")
    serve = cli(
        "serve",
        str(config_path),
        "--name",
        "tiny-served",
        "--cron",
        "0 3 * * *",
        env=server.env,
        log=server.workdir / "serve.log",
    )
    server.started.append(serve)
    served = wait_for(
        "served deployment", lambda: deployment(server, "inferscale/tiny-served"), 120, serve
    )
    assert [s.schedule.cron for s in served.schedules] == ["0 3 * * *"]
    # The validated config itself: the runs read no experiment file.
    assert served.parameters == flow_parameters(load_config(config_path), str(config_path))

    with server.client() as client:
        run = client.create_flow_run_from_deployment(served.id)
    run = wait_for(
        "finished flow run", lambda: finished_run(server, run.id), FLOW_RUN_TIMEOUT_S, serve
    )
    assert run.state.is_completed(), (server.workdir / "serve.log").read_text()[-5000:]
    p = plan(load_config(config_path))
    assert all(a.complete and not a.damage() for a in p.all())
    assert (p.analyze.path / "report.html").is_file()
    stop(serve)
    assert serve.returncode == 0, (server.workdir / "serve.log").read_text()[-3000:]


@pytest.mark.slow
def test_a_failed_deployment_run_retried_through_the_api_redoes_only_the_failed_stage(server):
    from prefect.states import AwaitingRetry

    from inferscale.locks import DirectoryLock

    # New evaluation keys, the same data and models as the served experiment's.
    config_path = tiny(server, "retried", **{"evaluation.seed": 7})
    p = plan(load_config(config_path))
    # The README's steps: a process work pool, the deployment on it, a worker that runs it (a
    # pool of its own, which the other tests' `local` cannot already be).
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "work-pool", "create", WORKER_POOL, "--type", "process"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deploy = cli(
        "deploy",
        str(config_path),
        "--pool",
        WORKER_POOL,
        "--name",
        "tiny-retried",
        env=server.env,
        log=server.workdir / "deploy-retried.log",
    )
    assert deploy.wait(timeout=180) == 0, (server.workdir / "deploy-retried.log").read_text()
    deployed = deployment(server, "inferscale/tiny-retried")
    log = server.workdir / "worker.log"
    worker = spawn(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORKER_POOL], server.env, log
    )
    server.started.append(worker)

    # The fault: another run holds evaluate-B, so that stage fails while the others finish.
    other_run = DirectoryLock(p.evaluate["B"].path, "evaluate")
    other_run.acquire()
    try:
        with server.client() as client:
            run_id = client.create_flow_run_from_deployment(deployed.id).id
        run = wait_for(
            "failed flow run", lambda: finished_run(server, run_id), FLOW_RUN_TIMEOUT_S, worker
        )
        assert run.state.is_failed(), (run.state, log.read_text()[-5000:])
        assert p.evaluate["A"].complete and not p.evaluate["B"].complete
        assert not p.analyze.complete
        before = markers(config_path)
    finally:
        other_run.release()
    # The worker reports the run's process, which exits with code 1, as crashed: the server
    # refuses that for a failed run, but not for one already put back to AwaitingRetry. As a
    # user does, retry once the worker is done with the failed run: it logs the exit's
    # resolution after its report, its last word on the run.
    wait_for(
        "worker done with the failed run",
        lambda: "prefect.flow_runs.worker - Check the flow run logs" in log.read_text(),
        60,
        worker,
    )
    with server.client() as client:
        assert client.read_flow_run(run_id).state.is_failed()

    with server.client() as client:  # what the UI's Retry button sends
        client.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the UI"), force=False)
    failed = run.state
    run = wait_for(
        "retried flow run",
        lambda: finished_run(server, run_id, retried_from=failed),
        FLOW_RUN_TIMEOUT_S,
        worker,
    )
    assert run.state.is_completed(), log.read_text()[-5000:]
    assert run.run_count == 2
    after = markers(config_path)
    redone = {path for path in before if after[path] != before[path]}
    assert redone == set()  # every stage finished in the failed attempt was found cached
    assert set(after) - set(before) == {str(p.evaluate["B"].path), str(p.analyze.path)}
    assert all(a.complete and not a.damage() for a in p.all())


@pytest.mark.slow
def test_deploy_puts_the_validated_config_on_an_existing_work_pool(server):
    from inferscale.flows.parameters import flow_parameters

    config_path = tiny(server, "deployed")
    missing = cli_refusal(
        "deploy", str(config_path), "--pool", "missing", "--cron", "0 3 * * *", env=server.env
    )
    assert "no work pool 'missing'" in missing and "prefect work-pool create" in missing
    pool = process_pool(server)
    deploy = cli(
        "deploy",
        str(config_path),
        "--pool",
        pool,
        "--name",
        "tiny-deployed",
        "--cron",
        "0 3 * * *",
        env=server.env,
        log=server.workdir / "deploy.log",
    )
    assert deploy.wait(timeout=180) == 0, (server.workdir / "deploy.log").read_text()
    deployed = deployment(server, "inferscale/tiny-deployed")
    assert deployed.work_pool_name == pool
    # Workers import the flow from the installed package and read no experiment file.
    assert deployed.entrypoint == "inferscale.flows.pipeline.experiment_flow"
    assert deployed.parameters == flow_parameters(load_config(config_path), str(config_path))
    assert [s.schedule.cron for s in deployed.schedules] == ["0 3 * * *"]


@pytest.mark.slow
def test_prefect_deploy_reads_prefect_yaml_and_validates_the_config(server, tmp_path):
    from inferscale.flows.parameters import flow_parameters

    repo = Path(__file__).resolve().parents[1]
    # The repository as prefect.yaml sees it, with an output folder of the test's own.
    shutil.copy(repo / "prefect.yaml", tmp_path)
    shutil.copytree(repo / "configs", tmp_path / "configs")
    (tmp_path / "src").symlink_to(repo / "src")
    process_pool(server)
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=tmp_path,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deployed = deployment(server, "inferscale/default")
    config_path = "configs/default.yaml"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        expected = flow_parameters(load_config(config_path), config_path)
    assert deployed.parameters == {k: expected[k] for k in ("config", "config_path")}
    assert deployed.parameters["config"]["output_dir"] == str(tmp_path.resolve() / "runs")
    assert deployed.entrypoint == "src/inferscale/flows/pipeline.py:experiment_flow"
    assert deployed.work_pool_name == "local"
    assert [s.schedule.cron for s in deployed.schedules] == ["0 3 * * *"]
    (pull,) = deployed.pull_steps
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == str(
        tmp_path.resolve()
    )
