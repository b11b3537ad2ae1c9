"""`inferscale status` says why a stage would run again, and how far a partial evaluation got;
`inferscale run --dry-run` prints the plan and runs nothing. Artifacts are made by hand."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from pipeline_config import tiny_config, write_config
from scripted_search import FMT, ScriptedBackend, ScriptedScorer, settings

from inferscale.artifacts import KEY_RECORD, StageArtifact
from inferscale.cli import main
from inferscale.compute import ModelCost
from inferscale.config import load_config
from inferscale.data.prepare import TEST_FILE
from inferscale.data.records import Problem
from inferscale.evaluation import (
    EvaluationPlan,
    SamplingSettings,
    evaluate_policy,
    planned_stores,
    store_path,
)
from inferscale.plan_status import key_changes, why_run
from inferscale.results import ResultStore
from inferscale.stage_code import PACKAGE_ROOT
from inferscale.stages import plan

QUESTIONS = 16  # the tiny config's test questions; its tree searches take the first 8


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # main() sets Prefect's defaults
    handler = signal.getsignal(signal.SIGTERM)
    yield main
    signal.signal(signal.SIGTERM, handler)


def finish(artifact: StageArtifact) -> None:
    """A finished artifact, as its stage leaves it."""
    artifact.path.mkdir(parents=True)
    artifact.mark_started()
    (artifact.path / "out.txt").write_text("result\n")
    if artifact.stage == "prepare_data":
        lines = (json.dumps({"id": f"q{i}"}) for i in range(QUESTIONS))
        (artifact.path / TEST_FILE).write_text("\n".join(lines) + "\n")
    artifact.mark_complete({})


def experiment(tmp_path, **overrides):
    path = write_config(tmp_path / "exp.yaml", tiny_config(tmp_path / "runs", **overrides))
    return path, plan(load_config(path))


def status(cli, capsys, path) -> list[str]:
    assert cli(["status", str(path)]) == 0
    return capsys.readouterr().out.splitlines()


def notes_of(lines: list[str], artifact: StageArtifact) -> list[str]:
    """The lines under the artifact's own line, up to the next artifact's."""
    start = next(i for i, line in enumerate(lines) if line.endswith(str(artifact.path)))
    notes = []
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 24):
            break
        notes.append(line.strip())
    return notes


def test_a_fresh_experiment_was_never_run(tmp_path, cli, capsys):
    path, p = experiment(tmp_path)
    lines = status(cli, capsys, path)
    for artifact in p.all():
        assert f"       -  {artifact.stage:<13} {artifact.path}" in lines
        assert notes_of(lines, artifact) == ["never run"]
    assert not (tmp_path / "runs").exists()


def test_status_names_the_setting_and_the_inputs_that_changed(tmp_path, cli, capsys):
    path, before = experiment(tmp_path)
    for artifact in before.all():
        finish(artifact)
    assert all(line.lstrip().startswith("done") for line in status(cli, capsys, path))

    path, after = experiment(tmp_path, **{"sft.learning_rate": 0.001})
    lines = status(cli, capsys, path)
    assert f"    done  prepare_data  {after.prepare_data.path}" in lines
    assert notes_of(lines, after.prepare_data) == []
    for name in ("A", "B"):
        assert notes_of(lines, after.sft[name]) == ["setting sft.learning_rate: 0.003 -> 0.001"]
    # A labels the steps, completes them and starts the PRM (the tiny config names none).
    assert notes_of(lines, after.label_steps) == ["input sft/A changed"]
    assert notes_of(lines, after.train_prm) == [
        "input label_steps/A changed",
        "input sft/A changed",
    ]
    assert notes_of(lines, after.evaluate["B"]) == [
        "input sft/B changed",
        "input train_prm/prm changed",
    ]
    assert notes_of(lines, after.analyze) == [
        "input evaluate/A changed",
        "input evaluate/B changed",
        "input train_prm/prm changed",
    ]


def test_a_partial_evaluation_shows_what_it_has_written(tmp_path, cli, capsys):
    path, p = experiment(tmp_path)
    for artifact in (p.prepare_data, *p.sft.values(), p.label_steps, p.train_prm):
        finish(artifact)
    evaluation = p.evaluate["A"]
    evaluation.path.mkdir(parents=True)
    evaluation.mark_started()
    ResultStore(store_path(evaluation.path, "greedy")).append([{"id": f"q{i}"} for i in range(5)])
    ResultStore(store_path(evaluation.path, "rebase-b2")).append([{"id": "q0"}, {"id": "q1"}])
    lines = status(cli, capsys, path)
    assert f" partial  evaluate      {evaluation.path}" in lines
    assert notes_of(lines, evaluation) == [
        "never finished",
        "progress: 7/80 questions written (greedy 5/16, samples-n4 0/16, samples-n4-prm 0/16, "
        "rebase-b2 2/8, rebase-b4 0/8, mcts-b4 0/8, beam_search-b4 0/8)",
    ]


def test_planned_stores_are_those_an_evaluation_writes(tmp_path):
    """The stores of the tiny experiment's evaluation: greedy, the pool and its PRM scores, each
    tree search at each budget."""
    path, _ = experiment(tmp_path)
    cfg = load_config(path).evaluation
    assert planned_stores(cfg.strategies, cfg.pool_size, cfg.search.budgets, 16, 8) == {
        "greedy": 16,
        "samples-n4": 16,
        "samples-n4-prm": 16,
        "rebase-b2": 8,
        "rebase-b4": 8,
        "mcts-b4": 8,
        "beam_search-b4": 8,
    }
    assert planned_stores(["majority_vote"], 8, {}, 10, 10) == {"samples-n8": 10}


def test_planned_stores_are_the_stores_a_finished_evaluation_holds(tmp_path):
    problems = [Problem(id=f"id-{q}", question=q, answer=q) for q in ("3", "5", "8")]
    strategies = ["greedy", "majority_vote", "weighted_vote", "rebase", "beam_search"]
    search_budgets = {"rebase": [2, 4], "beam_search": [4]}
    plan = EvaluationPlan(
        fmt=FMT,
        strategies=strategies,
        budgets=[1, 2],
        sampling=SamplingSettings(
            max_new_tokens=20, temperature=0.8, top_p=1.0, batch_size=8, seed=3
        ),
        cost=ModelCost(non_embedding=1000, total=1200, n_layer=2, d_model=16),
        search=settings(max_depth=3, beam_width=2),
        search_budgets=search_budgets,
        search_limit=2,
        prm_cost=ModelCost(non_embedding=300, total=400, n_layer=1, d_model=8),
    )
    backend = ScriptedBackend(lambda question, path: "answer" if question == "3" else None)
    evaluate_policy(problems, tmp_path, plan, lambda: backend, ScriptedScorer, lambda _: None)
    written = {
        path.stem: len(ResultStore(path).read()) for path in sorted(tmp_path.glob("*.jsonl"))
    }
    assert written == planned_stores(strategies, 2, search_budgets, 3, 2)


def test_a_code_edit_is_named_by_its_module(tmp_path):
    path, before = experiment(tmp_path)
    finish(before.evaluate["A"])
    root = tmp_path / "code" / "inferscale"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "scores.py").write_text((root / "scores.py").read_text() + "\n_EDITED = 1\n")
    after = plan(load_config(path), root).evaluate["A"]
    assert why_run(after) == ["code changed: inferscale/scores.py"]


def test_a_directory_without_a_key_record_is_named(tmp_path):
    path, before = experiment(tmp_path)
    finish(before.sft["A"])
    (before.sft["A"].path / KEY_RECORD).unlink()
    path, after = experiment(tmp_path, **{"sft.max_steps": 5})
    assert why_run(after.sft["A"]) == [
        f"last finished as {before.sft['A'].path.name}, which recorded no key components"
    ]


def test_key_changes_name_added_and_removed_components():
    before = {"settings": {"a": {"b": 1}, "gone": 2}, "inputs": {"x/1": "k", "y/1": "k"}}
    now = {"settings": {"a": {"b": 2}, "new": [1]}, "inputs": {"x/1": "k", "z/1": "k"}}
    before["code"] = {f"inferscale/m{i}.py": "h" for i in range(8)}
    now["code"] = {f"inferscale/m{i}.py": "h2" for i in range(8)}
    assert key_changes(before, now) == [
        "setting a.b: 1 -> 2",
        "setting gone: 2 -> (none)",
        "setting new: (none) -> [1]",
        "input y/1 is no longer read",
        "input z/1 is new",
        "code changed: inferscale/m0.py, inferscale/m1.py, inferscale/m2.py, inferscale/m3.py, "
        "inferscale/m4.py, inferscale/m5.py and 2 more",
    ]


def test_dry_run_prints_the_plan_and_runs_and_writes_nothing(tmp_path, cli, capsys, monkeypatch):
    path, before = experiment(tmp_path)
    for artifact in before.all():
        finish(artifact)
    path, after = experiment(tmp_path, **{"evaluation.seed": 7})

    def no_flow(*args, **kwargs):
        raise AssertionError("a dry run started the flow")

    monkeypatch.setattr("inferscale.flows.pipeline.experiment_flow", no_flow)
    files = set(tmp_path.rglob("*"))
    assert cli(["run", str(path), "--dry-run", "--refresh", "train_prm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert set(tmp_path.rglob("*")) == files
    assert lines[0] == "plan of tiny (nothing is run):"
    for artifact in (after.prepare_data, *after.sft.values(), after.label_steps):
        assert f"  cached  {artifact.name:<22} {artifact.path}" in lines
    assert f"     run  {'train_prm/prm':<22} {after.train_prm.path}" in lines
    assert notes_of(lines, after.train_prm) == ["--refresh"]
    for artifact in after.evaluate.values():
        assert notes_of(lines, artifact) == ["--refresh"]  # downstream of the refresh
    assert notes_of(lines, after.analyze) == ["--refresh"]

    assert cli(["run", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for artifact in after.evaluate.values():
        assert notes_of(lines, artifact) == ["setting evaluation.seed: 1234 -> 7"]
    assert notes_of(lines, after.analyze) == [
        "input evaluate/A changed",
        "input evaluate/B changed",
    ]


def test_settings_are_named_by_their_config_path_resolved(tmp_path):
    """The PRM's training settings are the sft section's unless given; the step labels'
    temperature is the generation's unless given: both are named where a user sets them."""
    path, before = experiment(tmp_path)
    finish(before.label_steps)
    finish(before.train_prm)
    changes = {"prm.training": {"weight_decay": 0.1}, "prm.labels.temperature": 0.8}
    path, after = experiment(tmp_path, **changes)
    assert why_run(after.label_steps) == [  # the rollouts' follows the solutions'
        "setting prm.labels.rollout_temperature: 1.0 -> 0.8",
        "setting prm.labels.temperature: 1.0 -> 0.8",
    ]
    assert why_run(after.train_prm) == [
        "setting prm.training.weight_decay: 0.0 -> 0.1",
        "input label_steps/A changed",
    ]
