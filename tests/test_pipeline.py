"""The whole flow under Prefect's test harness: caching, refresh, failed stages, W&B runs.

Training runs for real under the `deepspeed` launcher (one rank here; the two-rank case is in
test_sft.py) and generation through the transformers backend; the models are tiny.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pipeline_config import tiny_config, write_config

from inferscale.config import load_config
from inferscale.stages import plan
from inferscale.tracking.offline import find_runs, read_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def run_flow(config_path: Path, refresh: list[str] | None = None) -> Path:
    from inferscale.flows.parameters import flow_parameters
    from inferscale.flows.pipeline import experiment_flow

    parameters = flow_parameters(load_config(config_path), str(config_path), refresh)
    return Path(experiment_flow(**parameters))


def job_types(root: Path) -> list[str]:
    return sorted(read_run(d).job_type for d in find_runs(root / "wandb"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A config whose experiment has run once, end to end."""
    base = tmp_path_factory.mktemp("finished")
    config_path = write_config(base / "tiny.yaml", tiny_config(base / "runs"))
    run_flow(config_path)
    return config_path


def copy_experiment(config_path: Path, tmp_path: Path, **overrides) -> Path:
    """The finished experiment's artifacts under a new output dir (keys do not depend on it)."""
    shutil.copytree(config_path.parent / "runs", tmp_path / "runs")
    shutil.rmtree(tmp_path / "runs" / "tiny" / "wandb")
    return write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs", **overrides))


def forbid(monkeypatch, target: str) -> None:
    def fail(*args, **kwargs):
        raise AssertionError(f"{target} was called, but its stage should have been cached")

    monkeypatch.setattr(target, fail)


def count_calls(monkeypatch, target: str) -> list:
    import importlib

    module_name, attr = target.rsplit(".", 1)
    original = getattr(importlib.import_module(module_name), attr)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, counted)
    return calls


def test_first_run_writes_every_artifact_and_one_wandb_run_per_stage(finished):
    config = load_config(finished)
    p = plan(config)
    assert all(a.complete for a in p.all())
    report = p.analyze.path
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["policies"]) == {"A", "B"}
    assert (report / "error_vs_flops.png").stat().st_size > 1000
    assert (report / "error_vs_flops_all_questions.png").stat().st_size > 1000
    assert (report / "report.html").stat().st_size > 10_000
    table = pd.read_csv(report / "points.csv", dtype={"levels": str})
    # per policy: greedy and three votes at budgets 1, 2, 4, on all 16 questions and again on
    # the 8 the tree searches ran on; rebase at 2 and 4, mcts, beam search; the same again for
    # the questions of each of the two levels
    every_level = table[table.levels == "all"]
    assert len(every_level) == 2 * (2 * (1 + 3 * 3) + 2 + 1 + 1)
    assert sorted(set(table.levels)) == ["1", "2", "all"]
    assert len(table) == 3 * len(every_level)
    majority_on_all = every_level[
        (every_level.strategy == "majority_vote")
        & (every_level.budget == 4)
        & (every_level.questions == 16)
    ].set_index("policy")["accuracy"]
    assert set(summary["compute_optimal"]) == {"paper", "full"}
    assert "coverage" in summary and "voting_limits" in summary and "comparisons" in summary
    assert {p: (r["questions"], r["of"]) for p, r in summary["compared"].items()} == {
        "A": (8, 16),
        "B": (8, 16),
    }
    assert job_types(p.root) == [
        "analyze",
        "evaluate",
        "evaluate",
        "label_steps",
        "prepare_data",
        "sft",
        "sft",
        "train_prm",
    ], [(d.name, read_run(d).name) for d in find_runs(p.root / "wandb")]
    # Four SFT steps leave the policies wrong everywhere, so every label is negative: no AUC.
    assert summary["prm"]["steps"] > 0 and "step_auc" in summary["prm"]
    # The synthetic task knows each step's truth: the PRM is measured against it too.
    assert "step_auc_exact" in summary["prm"]
    assert summary["prm"]["label_agreement"]["steps"] == summary["prm"]["steps"]
    assert set(summary["pareto"]["A"]) == {
        "greedy",
        "majority_vote",
        "weighted_vote",
        "best_of_n",
        "rebase",
        "mcts",
        "beam_search",
    }
    for run_dir in find_runs(p.root / "wandb"):
        run = read_run(run_dir)
        assert run.group == "tiny" and run.exit_code == 0
        if run.job_type == "sft":
            losses = [row["train/loss"] for row in run.history if "train/loss" in row]
            assert len(losses) == 4  # max_steps 4, logging every step
        if run.job_type == "evaluate":
            assert "majority_vote@4" in run.summary and "greedy@1" in run.summary
            policy = run.name.removeprefix("evaluate-")
            assert run.summary["majority_vote@4"] == majority_on_all[policy]
            assert "rebase@4" in run.summary and "weighted_vote@4" in run.summary
        if run.job_type == "train_prm":
            assert any("train/loss" in row for row in run.history)
        if run.job_type == "label_steps":  # unset, both follow generation.temperature
            assert run.config["temperature"] == run.config["rollout_temperature"] == 1.0


def test_plan_answers_as_the_reports_compute_optimal_table(finished, capsys):
    from inferscale.cli import main

    summary = json.loads((plan(load_config(finished)).analyze.path / "summary.json").read_text())
    rows = summary["compute_optimal"]["paper"]["rows"]
    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        assert main(["plan", str(finished), "--flops", repr(row["flops"])]) == 0
        best = capsys.readouterr().out.splitlines()[1]
        expected = f"best  {row['best']['policy']} "
        assert best.strip().startswith(expected.strip()), (best, row)
        assert f"error {row['best']['error']:.3f}" in best
    cheapest = min(c["flops"] for r in rows for c in (r["best"],))
    assert main(["plan", str(finished), "--flops", repr(cheapest / 10)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "below the cheapest measured point" in err
    assert main(["plan", str(finished), "--flops", "-5"]) == 2
    assert "positive number" in capsys.readouterr().err
    assert main(["plan", str(finished), "--flops", "1e30", "--level", "9"]) == 2
    assert "not a difficulty group" in capsys.readouterr().err
    assert main(["report", str(finished)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")


def test_second_run_trains_and_generates_nothing(finished, monkeypatch):
    root = plan(load_config(finished)).root
    before = len(find_runs(root / "wandb"))
    forbid(monkeypatch, "inferscale.tasks.sft.run_sft")
    forbid(monkeypatch, "inferscale.tasks.evaluate.load_backend")
    forbid(monkeypatch, "inferscale.tasks.prepare_data.prepare_data")
    forbid(monkeypatch, "inferscale.tasks.label_steps.load_backend")
    forbid(monkeypatch, "inferscale.tasks.train_prm.run_prm_training")
    report = run_flow(finished)
    assert report == plan(load_config(finished)).analyze.path
    assert len(find_runs(root / "wandb")) == before  # skipped stages start no W&B run


def test_refresh_recomputes_the_stage_and_its_downstream_only(finished, tmp_path, monkeypatch):
    config_path = copy_experiment(finished, tmp_path)
    p = plan(load_config(config_path))
    greedy_file = p.evaluate["A"].path / "greedy.jsonl"
    greedy_file.write_text("")  # would be resumed from, were the stage not refreshed
    forbid(monkeypatch, "inferscale.tasks.sft.run_sft")
    forbid(monkeypatch, "inferscale.tasks.train_prm.run_prm_training")
    backends = count_calls(monkeypatch, "inferscale.tasks.evaluate.load_backend")
    run_flow(config_path, refresh=["evaluate"])
    assert len(backends) == 2  # both policies evaluated again
    assert len(greedy_file.read_text().splitlines()) == 16
    assert job_types(p.root) == ["analyze", "evaluate", "evaluate"]


def test_a_failed_stage_is_reported_and_rerun_alone(finished, tmp_path, monkeypatch):
    from inferscale.flows.pipeline import StagesFailed

    # New budgets: new evaluate and analyze keys, same data and models.
    config_path = copy_experiment(finished, tmp_path, **{"evaluation.budgets": [1, 2]})
    p = plan(load_config(config_path))
    forbid(monkeypatch, "inferscale.tasks.sft.run_sft")

    import inferscale.tasks.evaluate as evaluate_module

    real_load = evaluate_module.load_backend

    def broken_for_b(generation, model_dir):
        if Path(model_dir) == p.sft["B"].path:
            raise RuntimeError("simulated out-of-memory while loading B")
        return real_load(generation, model_dir)

    monkeypatch.setattr(evaluate_module, "load_backend", broken_for_b)
    with pytest.raises(StagesFailed, match="evaluate-B.*simulated out-of-memory"):
        run_flow(config_path)
    assert p.evaluate["A"].complete and not p.evaluate["B"].complete
    assert not p.analyze.complete

    loaded = []
    monkeypatch.setattr(
        evaluate_module, "load_backend", lambda g, d: loaded.append(d) or real_load(g, d)
    )
    run_flow(config_path)
    assert [Path(d) for d in loaded] == [p.sft["B"].path]
    assert p.analyze.complete


def test_a_damaged_finished_model_is_trained_again(finished, tmp_path, monkeypatch):
    config_path = copy_experiment(finished, tmp_path)
    p = plan(load_config(config_path))
    (p.sft["A"].path / "model.safetensors").unlink()
    trained = count_calls(monkeypatch, "inferscale.tasks.sft.run_sft")
    forbid(monkeypatch, "inferscale.tasks.train_prm.run_prm_training")
    run_flow(config_path)
    assert [call[0]["output_dir"] for call in trained] == [str(p.sft["A"].path)]
    assert p.sft["A"].damage() == [] and p.analyze.complete


def test_status_names_the_damage_of_a_finished_artifact(finished, tmp_path, capsys):
    from inferscale.cli import main

    config_path = copy_experiment(finished, tmp_path)
    p = plan(load_config(config_path))
    (p.sft["A"].path / "model.safetensors").unlink()
    assert main(["status", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert f" damaged  sft           {p.sft['A'].path}" in out
    assert "model.safetensors is missing: the next run computes it again" in out


def test_a_failed_refresh_leaves_no_stale_result_marked_finished(
    finished, tmp_path, monkeypatch, capsys
):
    from inferscale.cli import main
    from inferscale.flows.pipeline import StagesFailed

    config_path = copy_experiment(finished, tmp_path)
    p = plan(load_config(config_path))

    def broken(generation, model_dir):
        raise RuntimeError("simulated out-of-memory")

    monkeypatch.setattr("inferscale.tasks.evaluate.load_backend", broken)
    with pytest.raises(StagesFailed):
        run_flow(config_path, refresh=["evaluate"])
    assert not p.analyze.complete and not p.evaluate["A"].complete
    assert p.train_prm.complete  # upstream of the refresh: kept as it was
    with pytest.raises(SystemExit):
        main(["summary", str(config_path)])
    assert "no finished analysis" in capsys.readouterr().err


def test_a_stage_another_run_is_computing_is_left_to_it(finished, tmp_path, monkeypatch):
    from inferscale.flows.pipeline import StagesFailed
    from inferscale.locks import DirectoryLock

    config_path = copy_experiment(finished, tmp_path, **{"evaluation.budgets": [1, 2]})
    p = plan(load_config(config_path))
    other_run = DirectoryLock(p.evaluate["A"].path, "evaluate")
    other_run.acquire()  # as a live run computing evaluate-A holds it
    try:
        with pytest.raises(StagesFailed, match=r"evaluate-A: evaluate at .* another run \(pid"):
            run_flow(config_path)
        assert p.evaluate["B"].complete and not p.evaluate["A"].complete
    finally:
        other_run.release()
    run_flow(config_path)
    assert p.evaluate["A"].complete and p.analyze.complete
