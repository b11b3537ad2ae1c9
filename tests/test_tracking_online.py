"""Online tracking never fails a run for want of a key or a network, and the W&B API key never
lands in a file under the output folder. No W&B server is contacted: the server here is a local
address nothing listens on, or a local socket that answers as told."""

from __future__ import annotations

import http.server
import logging
import os
import socket
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import wandb
import yaml
from pipeline_config import tiny_config, write_config

from inferscale.cli import main
from inferscale.config import load_config
from inferscale.stages import plan
from inferscale.tracking.connection import (
    TrackingError,
    check_credentials,
    missing_credentials,
    run_mode,
    server_answers,
    settle_tracking,
)
from inferscale.tracking.offline import find_runs, read_run
from inferscale.tracking.wandb_runs import TrackingSettings, finish_run, start_run

# Nothing listens on the discard port: a connection is refused at once.
UNREACHABLE = "http://127.0.0.1:9"
# 40 characters, as W&B keys are; found nowhere else.
FAKE_KEY = "inferscaleFakeKey0123456789abcdefghijKLM"


@pytest.fixture(autouse=True)
def isolated_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No WANDB_* from the caller, no netrc or W&B settings of the user's."""
    for key in list(os.environ):
        if key.startswith("WANDB_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(home / key.lower()))
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    # wandb reads its settings once per process: start from these.
    wandb.teardown()
    yield home
    wandb.teardown()


def online_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "online.yaml", tiny_config(tmp_path / "runs", **{"tracking.mode": "online"})
    )


# --- a key ---


def test_online_tracking_without_a_key_is_refused_in_one_line():
    with pytest.raises(TrackingError) as info:
        check_credentials("online", UNREACHABLE)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("tracking.mode is online but no W&B API key was found")
    for fix in ("WANDB_API_KEY", "`wandb login`", "tracking.mode: offline"):
        assert fix in message


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_offline_and_disabled_tracking_need_no_key(mode):
    check_credentials(mode, UNREACHABLE)


def test_the_key_is_found_where_wandb_finds_it(isolated_wandb, monkeypatch):
    assert missing_credentials(UNREACHABLE) is not None
    # What `wandb login` writes: a netrc entry for the server's host.
    netrc = isolated_wandb / ".netrc"
    netrc.write_text(f"machine 127.0.0.1:9\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    assert missing_credentials(UNREACHABLE) is None
    assert missing_credentials("http://127.0.0.1:10") is not None  # another server's
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert missing_credentials(UNREACHABLE) is None
    check_credentials("online", UNREACHABLE)


def test_a_malformed_key_is_refused_naming_the_fix(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "too-short")
    with pytest.raises(TrackingError, match="not valid.*set WANDB_API_KEY"):
        check_credentials("online", UNREACHABLE)


def test_validate_refuses_online_tracking_without_a_key(tmp_path, capsys):
    config = online_config(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["validate", str(config)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{config}: tracking.mode is online")
    assert "WANDB_API_KEY" in err and "wandb login" in err


def test_run_refuses_online_tracking_without_a_key_before_any_work(tmp_path, capsys, monkeypatch):
    def no_flow(*args, **kwargs):
        raise AssertionError("the flow started")

    pipeline = types.ModuleType("inferscale.flows.pipeline")
    pipeline.experiment_flow = no_flow
    pipeline.StagesFailed = RuntimeError
    monkeypatch.setitem(sys.modules, "inferscale.flows.pipeline", pipeline)
    config = online_config(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["run", str(config)])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"{config}: tracking.mode is online")
    assert not (tmp_path / "runs").exists()


# --- a server that answers ---


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def answering_server():
    """A local server answering every GET with the status it is given."""
    servers = []

    def serve(status: int) -> str:
        handler = type("Handler", (_Answer,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "answers"), [(200, True), (401, True), (404, True)])
def test_any_answer_of_the_server_counts(answering_server, status, answers):
    assert server_answers(answering_server(status), timeout_s=5) is answers


def test_a_gateway_that_cannot_reach_the_server_does_not_count(answering_server):
    assert not server_answers(answering_server(502), timeout_s=5)


def test_a_refused_connection_is_known_at_once():
    start = time.perf_counter()
    assert not server_answers(UNREACHABLE, timeout_s=5)
    assert time.perf_counter() - start < 2


def test_a_server_that_never_answers_is_given_up_after_the_timeout():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.perf_counter()
        assert not server_answers(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
        assert time.perf_counter() - start < 1.5


def test_online_goes_offline_only_when_the_server_does_not_answer():
    asked = []

    def answers(url: str) -> bool:
        asked.append(url)
        return url == "http://up"

    assert run_mode("online", "http://up", answers) == "online"
    assert run_mode("online", "http://down", answers) == "offline"
    assert run_mode("offline", "http://down", answers) == "offline"
    assert run_mode("disabled", "http://down", answers) == "disabled"
    assert asked == ["http://up", "http://down"]


def test_a_run_settles_offline_with_one_warning_naming_the_runs_and_how_to_sync(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", UNREACHABLE)
    config = load_config(online_config(tmp_path))
    warnings: list[str] = []
    wandb_dir = plan(config).root / "wandb"
    settled = settle_tracking(config, wandb_dir, warnings.append)
    assert settled.tracking.mode == "offline"
    assert settled.model_dump(exclude={"tracking"}) == config.model_dump(exclude={"tracking"})
    assert settled.tracking.project == config.tracking.project
    [warning] = warnings
    assert "\n" not in warning and UNREACHABLE in warning
    assert f"written offline under {wandb_dir}" in warning
    assert f"`wandb sync {wandb_dir}/offline-run-*`" in warning
    # A server that answers keeps the run online, with no warning.
    assert settle_tracking(config, wandb_dir, warnings.append, lambda url: True) is config
    assert len(warnings) == 1


def test_a_run_without_a_key_stops_before_its_first_stage(tmp_path):
    config = load_config(online_config(tmp_path))
    with pytest.raises(TrackingError, match="tracking.mode is online"):
        settle_tracking(config, tmp_path / "wandb", print, lambda url: True)


# --- a stage whose work is done ---


def test_a_stage_run_that_cannot_start_online_is_written_offline(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", UNREACHABLE)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    settings = TrackingSettings(project="inferscale-test", group="experiment-1", mode="online")
    with caplog.at_level(logging.WARNING, logger="inferscale.tracking.wandb_runs"):
        run = start_run(settings, "evaluate", "evaluate-a", {"budget": 4}, tmp_path)
        run.log({"accuracy": 0.5})
        finish_run(run)
    [warning] = [r.getMessage() for r in caplog.records if r.name.startswith("inferscale")]
    assert "evaluate-a could not start online" in warning and "runs offline instead" in warning
    [run_dir] = find_runs(tmp_path / "wandb")
    offline = read_run(run_dir)
    assert (offline.group, offline.job_type, offline.config) == (
        "experiment-1",
        "evaluate",
        {"budget": 4},
    )
    assert offline.history[0]["accuracy"] == 0.5


def test_a_run_that_fails_to_finish_is_a_warning(caplog):
    def fail():
        raise wandb.errors.CommError("network is unreachable")

    run = types.SimpleNamespace(name="analyze", offline=False, finish=fail)
    with caplog.at_level(logging.WARNING, logger="inferscale.tracking.wandb_runs"):
        finish_run(run)
    assert "analyze did not finish cleanly" in caplog.text
    assert "network is unreachable" in caplog.text


# --- the key in files ---


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_an_online_run_without_network_finishes_offline_and_writes_no_key(tmp_path, monkeypatch):
    from inferscale.flows.parameters import flow_parameters
    from inferscale.flows.pipeline import experiment_flow

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", UNREACHABLE)
    # Were a stage to try online anyway, it would give up soon.
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    config_path = online_config(tmp_path)
    assert yaml.safe_load(config_path.read_text())["tracking"]["mode"] == "online"
    root = plan(load_config(config_path)).root

    start = time.perf_counter()
    experiment_flow(**flow_parameters(load_config(config_path), str(config_path)))
    elapsed = time.perf_counter() - start

    assert all(a.complete for a in plan(load_config(config_path)).all())
    runs = find_runs(root / "wandb")
    assert sorted(read_run(d).job_type for d in runs) == [
        "analyze",
        "evaluate",
        "evaluate",
        "label_steps",
        "prepare_data",
        "sft",
        "sft",
        "train_prm",
    ]
    assert {read_run(d).project for d in runs} == {"inferscale"}
    # Settled offline before the first stage: no run tried online.
    online_dirs = [d for d in (root / "wandb").glob("run-*") if d.is_dir()]
    assert online_dirs == [], online_dirs
    key = FAKE_KEY.encode()
    # Every file under the output folder (specs, logs, W&B's run files), and Prefect's own.
    folders = [tmp_path / "runs", Path(os.environ["PREFECT_HOME"])]
    files = [p for f in folders for p in f.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 50
    assert [p for p in files if key in p.read_bytes()] == []
    print(f"online run without network: {elapsed:.0f} s")
