"""`run --only STAGE [--policy NAME]`: which finished inputs a stage needs and the one line that
names a missing one (pure), the command refusing before any work, and the flow running one
stage alone under Prefect's test harness."""

from __future__ import annotations

import os
import signal
import sys
import types
from pathlib import Path

import pytest
from pipeline_config import tiny_config, write_config

from inferscale.cli import main
from inferscale.config import load_config
from inferscale.single_stage import input_steps, selected_steps, selection_problem
from inferscale.stages import plan


@pytest.fixture
def experiment(tmp_path):
    return write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))


def finish(artifact) -> None:
    """Mark an artifact finished, with one file in it, as its stage would."""
    artifact.path.mkdir(parents=True, exist_ok=True)
    (artifact.path / "out.txt").write_text("done\n")
    artifact.mark_complete({})


def problem(path: Path, stage: str, policy: str | None = None, refresh=()) -> str | None:
    config = load_config(path)
    return selection_problem(config, plan(config), stage, policy, list(refresh), str(path))


def test_each_stage_reads_what_the_flow_gives_it(experiment):
    config = load_config(experiment)
    p = plan(config)

    def inputs(stage, policy=None):
        [step] = selected_steps(config, p, stage, policy)
        return [(s.name, s.artifact) for s in input_steps(config, p, step)]

    assert inputs("prepare_data") == []
    assert inputs("sft", "B") == [("prepare_data", p.prepare_data)]
    # The tiny config labels A's solutions with A's completions and starts the PRM from A.
    assert inputs("label_steps") == [("prepare_data", p.prepare_data), ("sft-A", p.sft["A"])]
    assert inputs("train_prm") == [("sft-A", p.sft["A"]), ("label_steps", p.label_steps)]
    assert inputs("evaluate", "B") == [
        ("prepare_data", p.prepare_data),
        ("sft-B", p.sft["B"]),
        ("train_prm", p.train_prm),
    ]
    assert inputs("analyze") == [
        ("evaluate-A", p.evaluate["A"]),
        ("evaluate-B", p.evaluate["B"]),
        ("train_prm", p.train_prm),
    ]
    every = selected_steps(config, p, "evaluate", None)
    assert [s.name for s in every] == ["evaluate-A", "evaluate-B"]


def test_the_first_unfinished_input_is_named_with_the_command_that_makes_it(experiment):
    p = plan(load_config(experiment))
    assert problem(experiment, "prepare_data") is None
    assert problem(experiment, "evaluate", "B") == (
        f"{experiment}: evaluate-B needs prepare_data, which is not finished "
        f"({p.prepare_data.path}); run `inferscale run {experiment} --only prepare_data` first"
    )
    finish(p.prepare_data)
    assert problem(experiment, "evaluate", "B") == (
        f"{experiment}: evaluate-B needs sft-B, which is not finished ({p.sft['B'].path}); "
        f"run `inferscale run {experiment} --only sft --policy B` first"
    )
    finish(p.sft["B"])
    assert f"needs train_prm, which is not finished ({p.train_prm.path})" in problem(
        experiment, "evaluate", "B"
    )
    finish(p.train_prm)
    assert problem(experiment, "evaluate", "B") is None
    # Without --policy, every policy's inputs must be finished.
    assert "evaluate-A needs sft-A, which is not finished" in problem(experiment, "evaluate")
    finish(p.sft["A"])
    assert problem(experiment, "evaluate") is None
    (p.sft["A"].path / "out.txt").unlink()
    damaged = f"evaluate-A needs sft-A, which is damaged: out.txt is missing ({p.sft['A'].path})"
    assert damaged in problem(experiment, "evaluate")


def test_a_selection_that_makes_no_sense_is_refused(experiment, tmp_path):
    src = str(experiment)
    assert problem(experiment, "train_prm", "A") == (
        f"{src}: --policy applies to sft and evaluate, not to train_prm; drop it"
    )
    assert problem(experiment, "sft", "C") == f"{src}: --policy C: no such policy; policies: A, B"
    assert (
        problem(experiment, None, "A") == f"{src}: --policy A needs --only sft or --only evaluate"
    )
    assert problem(experiment, None) is None
    assert "--only and --refresh together" in problem(experiment, "sft", None, ["sft"])
    no_prm = tiny_config(tmp_path / "runs", **{"evaluation.strategies": ["greedy"]})
    del no_prm["prm"]
    path = write_config(tmp_path / "no_prm.yaml", no_prm)
    assert problem(path, "train_prm") == (
        f"{path}: --only train_prm: this experiment has no train_prm stage (it has no PRM)"
    )


@pytest.fixture
def tripwire(monkeypatch):
    """`main`, with the run's flow replaced by a tripwire."""
    flow = types.ModuleType("inferscale.flows.pipeline")

    def experiment_flow(*args, **kwargs):
        raise AssertionError("the run started work")

    flow.experiment_flow, flow.StagesFailed = experiment_flow, RuntimeError
    monkeypatch.setitem(sys.modules, "inferscale.flows.pipeline", flow)
    monkeypatch.setattr("inferscale.reaper.start_for", lambda pid: None)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    handler = signal.getsignal(signal.SIGTERM)
    yield main
    signal.signal(signal.SIGTERM, handler)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--only", "evaluate", "--policy", "A"], "evaluate-A needs prepare_data"),
        (["--policy", "A"], "--policy A needs --only sft or --only evaluate"),
        (["--only", "sft", "--refresh", "sft"], "--only and --refresh together"),
        (["--only", "sft", "--set", "seed=2"], "sft-A needs prepare_data"),
    ],
)
def test_run_refuses_an_unrunnable_selection_before_any_work(
    experiment, tripwire, capsys, args, says
):
    before = set(experiment.parent.rglob("*"))
    with pytest.raises(SystemExit) as exit:
        tripwire(["run", str(experiment), *args])
    assert exit.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and says in err, err
    assert err.startswith(f"{experiment}")
    assert set(experiment.parent.rglob("*")) == before


def test_an_unknown_stage_is_refused_by_the_parser(experiment, tripwire, capsys):
    with pytest.raises(SystemExit) as exit:
        tripwire(["run", str(experiment), "--only", "train"])
    assert exit.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err


@pytest.fixture
def command_line(monkeypatch):
    """`main` with the real flow; the process-wide settings it makes undone afterwards."""
    monkeypatch.setattr("inferscale.reaper.start_for", lambda pid: None)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    handler = signal.getsignal(signal.SIGTERM)
    yield main
    signal.signal(signal.SIGTERM, handler)


@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_runs_one_stage_alone_and_refuses_missing_inputs(tmp_path, command_line, capsys):
    from prefect.client.orchestration import get_client

    from inferscale.flows.parameters import flow_parameters
    from inferscale.flows.pipeline import CannotRunAlone, experiment_flow

    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    sets = ["--set", "tracking.mode=disabled", "--set", "seed=11"]
    config = load_config(path, sets[1::2])
    source = f"{path} --set tracking.mode=disabled --set seed=11"
    p = plan(config)
    # From a deployment the command line's check is not there: the flow makes it itself.
    with pytest.raises(CannotRunAlone, match="evaluate-A needs prepare_data"):
        experiment_flow(**flow_parameters(config, source, only="evaluate", policy="A"))
    assert not p.root.joinpath("artifacts").exists()

    assert command_line(["run", str(path), *sets, "--only", "prepare_data"]) == 0
    out = capsys.readouterr().out
    assert f"prepare_data: {p.prepare_data.path}" in out
    assert p.prepare_data.complete and p.prepare_data.damage() == []
    assert sorted(d.name for d in (p.root / "artifacts").iterdir()) == ["prepare_data"]
    with get_client(sync_client=True) as client:
        names = {run.name for run in client.read_flow_runs()}
    assert f"{source} --only prepare_data" in names  # as the Prefect UI lists it
    assert f"{source} --only evaluate --policy A" in names
    # A finished stage run alone again is reused as it is.
    marker = (p.prepare_data.path / "_COMPLETE.json").read_text()
    parameters = flow_parameters(config, source, only="prepare_data")
    assert experiment_flow(**parameters) == {"prepare_data": str(p.prepare_data.path)}
    assert (p.prepare_data.path / "_COMPLETE.json").read_text() == marker


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_only_sft_for_one_policy_trains_that_policy_and_nothing_after_it(
    tmp_path, command_line, capsys, monkeypatch
):
    path = write_config(
        tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs", **{"tracking.mode": "disabled"})
    )
    from contextlib import nullcontext

    from inferscale.models import launch

    bars = []

    def progress(description, total, done=0, unit="question"):
        advances: list[int] = []
        bars.append((total, unit, advances))
        return nullcontext(advances.append)

    # As on a terminal: the training's bar follows the steps its rank 0 records.
    monkeypatch.setattr(launch, "bars_shown", lambda: True)
    monkeypatch.setattr(launch, "terminal_progress", progress)
    p = plan(load_config(path))
    assert command_line(["run", str(path), "--only", "prepare_data"]) == 0
    assert command_line(["run", str(path), "--only", "sft", "--policy", "B"]) == 0
    assert f"sft-B: {p.sft['B'].path}" in capsys.readouterr().out
    assert p.sft["B"].complete and (p.sft["B"].path / "train_summary.json").is_file()
    [(total, unit, advances)] = bars
    assert (total, unit, sum(advances)) == (4, "step", 4)  # max_steps 4
    assert p.sft["B"].damage() == [] and not (p.sft["B"].path / ".step").exists()
    assert sorted(d.name for d in (p.root / "artifacts").iterdir()) == ["prepare_data", "sft"]
    assert [d.name for d in (p.root / "artifacts" / "sft").iterdir() if d.is_dir()] == [
        p.sft["B"].path.name
    ]
