"""`execution.engine: ray`: the tiny experiment's evaluations split into shards on a local Ray,
byte for byte the local run's, and a shard whose worker is killed resumes alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_config import REPO, tiny_config, write_config

from inferscale.numerics import MODE_ENV, PIN_NAMES
from inferscale.results import ResultStore
from inferscale.shards import ATTEMPTS_FILE, HISTORY_FILE, SHARDS_DIR, read_attempts

pytestmark = pytest.mark.slow

SHARDS = {"engine": "ray", "ray": {"shards": 2, "num_cpus_per_shard": 1}}


def native_env(workdir: Path) -> dict[str, str]:
    """The machine's own CPU kernels, in the run and its Ray workers alike: with them a score
    does not depend on which other questions a batch holds (under the portable pins, a PRM
    score can move in its last bit with the batch: see README)."""
    env = {k: v for k, v in os.environ.items() if k not in PIN_NAMES}
    return {**env, MODE_ENV: "native", "PREFECT_HOME": str(workdir / "prefect")}


def config(workdir: Path, **execution) -> Path:
    raw = tiny_config(workdir / "runs", **{"generation.batch_size": 8})
    raw["tracking"] = {"mode": "offline"}
    if execution:
        raw["execution"] = execution
    return write_config(workdir / "experiment.yaml", raw)


def run(config_path: Path, workdir: Path, log: str) -> subprocess.Popen:
    with (workdir / log).open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "inferscale.cli", "run", str(config_path)],
            cwd=REPO,
            env=native_env(workdir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish(proc: subprocess.Popen, workdir: Path, log: str, timeout_s: float = 600) -> None:
    try:
        code = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 0, (workdir / log).read_text()[-3000:]


def artifacts(workdir: Path, stage: str) -> dict[str, Path]:
    """The stage's artifact folders by name (A, B, report), whatever their keys."""
    root = workdir / "runs" / "tiny" / "artifacts" / stage
    return {p.name.split("-")[0]: p for p in root.iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    """The tiny experiment run whole, locally."""
    workdir = tmp_path_factory.mktemp("local")
    finish(run(config(workdir), workdir, "run.log"), workdir, "run.log")
    return workdir


def shard_runs(workdir: Path) -> list[tuple[str, str]]:
    """The shards' task runs that the run's one Prefect API recorded: (name, state)."""
    with sqlite3.connect(workdir / "prefect" / "prefect.db") as db:
        rows = db.execute("SELECT name, state_type FROM task_run WHERE name LIKE '%-shard-%'")
        return sorted(rows.fetchall())


def sharded_copy(local: Path, workdir: Path, redo: tuple[str, ...]) -> Path:
    """The local run with the stages `redo` gone, configured to shard."""
    shutil.copytree(local / "runs", workdir / "runs")
    for stage in redo:
        shutil.rmtree(workdir / "runs" / "tiny" / "artifacts" / stage)
    return config(workdir, **SHARDS)


def without_times(value):
    """A JSON value without its timings (`seconds`, `eval_seconds`), which differ between any
    two runs."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def read_json(path: Path):
    return json.loads(path.read_text())


def assert_same_results(local: Path, sharded: Path) -> None:
    mine, theirs = artifacts(local, "evaluate"), artifacts(sharded, "evaluate")
    assert set(mine) == set(theirs) == {"A", "B"}
    for name, folder in mine.items():
        files = sorted(p.name for p in folder.glob("*.jsonl"))
        assert "samples-n4.jsonl" in files and "rebase-b4.jsonl" in files
        for file in files:
            assert (theirs[name] / file).read_bytes() == (folder / file).read_bytes(), file
        assert without_times(read_json(theirs[name] / "metrics.json")) == without_times(
            read_json(folder / "metrics.json")
        )
        assert not (theirs[name] / SHARDS_DIR).exists()
    report, sharded_report = (
        artifacts(local, "analyze")["report"],
        artifacts(sharded, "analyze")["report"],
    )
    assert without_times(read_json(sharded_report / "summary.json")) == without_times(
        read_json(report / "summary.json")
    )
    for file in ("points.csv", "compute_optimal.csv", "pass_at_k.csv", "voting_limits.csv"):
        assert (sharded_report / file).read_bytes() == (report / file).read_bytes(), file


def test_a_sharded_run_writes_the_local_runs_records_and_summary(local, tmp_path):
    # Step labels too: labelled on shards, then the PRM trained on them again.
    path = sharded_copy(local, tmp_path, ("label_steps", "train_prm", "evaluate", "analyze"))
    finish(run(path, tmp_path, "run.log"), tmp_path, "run.log")
    labels, sharded_labels = artifacts(local, "label_steps"), artifacts(tmp_path, "label_steps")
    for file in ("labels.jsonl", "heldout.jsonl"):
        assert (sharded_labels["A"] / file).read_bytes() == (labels["A"] / file).read_bytes()
    events = read_attempts(sharded_labels["A"] / HISTORY_FILE)
    assert sorted(e["shard"] for e in events if e["event"] == "started") == [0, 1]
    assert_same_results(local, tmp_path)
    assert shard_runs(tmp_path) == [
        (f"{stage}-{policy}-shard-{k}", "COMPLETED")
        for stage, policy in (("evaluate", "A"), ("evaluate", "B"), ("label_steps", "A"))
        for k in (0, 1)
    ]
    for folder in artifacts(tmp_path, "evaluate").values():
        events = read_attempts(folder / HISTORY_FILE)
        assert sorted(e["shard"] for e in events if e["event"] == "started") == [0, 1]
        # Each shard did its half of the 16 questions, and nothing twice.
        done = [e["stores"]["samples-n4"] for e in events if e["event"] == "finished"]
        assert done == [{"written": 0, "generated": 8}] * 2


def test_a_shard_whose_worker_dies_resumes_and_the_other_is_not_redone(local, tmp_path):
    path = sharded_copy(local, tmp_path, ("evaluate", "analyze"))
    proc = run(path, tmp_path, "run.log")
    stage = tmp_path / "runs" / "tiny" / "artifacts" / "evaluate"
    deadline = time.monotonic() + 300
    killed, seen = None, 0
    while killed is None:
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "shard 0 of A wrote no 2 pool records in 300 s"
        for shard in stage.glob(f"A-*/{SHARDS_DIR}/0"):
            store = shard / "samples-n4.jsonl"
            started = [e for e in read_attempts(shard / ATTEMPTS_FILE) if e["event"] == "started"]
            seen = len(ResultStore(store).read()) if store.exists() else 0
            if started and seen >= 2:
                os.kill(started[-1]["pid"], signal.SIGKILL)
                killed = started[-1]["pid"]
        time.sleep(0.02)
    finish(proc, tmp_path, "run.log")

    events = read_attempts(artifacts(tmp_path, "evaluate")["A"] / HISTORY_FILE)
    starts = {k: [e for e in events if e["shard"] == k and e["event"] == "started"] for k in (0, 1)}
    assert len(starts[0]) == 2 and starts[0][0]["pid"] == killed
    assert len(starts[1]) == 1, "the other shard was run again"
    ends = {(e["shard"], e["attempt"]): e["stores"] for e in events if e["event"] == "finished"}
    assert (0, 1) not in ends, "the killed attempt finished before the kill"
    pool = ends[(0, 2)]["samples-n4"]
    # The second attempt generated only what the first had not written.
    assert pool["written"] >= seen and pool["written"] + pool["generated"] == 8
    assert pool["generated"] < 8
    assert ends[(0, 2)]["greedy"] == {"written": 8, "generated": 0}
    assert ends[(1, 1)]["samples-n4"] == {"written": 0, "generated": 8}
    # The lost attempt is marked crashed in the run's Prefect API, its retry completed.
    runs = [r for r in shard_runs(tmp_path) if r[0] == "evaluate-A-shard-0"]
    assert sorted(state for _, state in runs) == ["COMPLETED", "CRASHED"]
    # And the results are still the local run's.
    assert_same_results(local, tmp_path)
