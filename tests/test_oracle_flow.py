"""The tiny experiment end to end with a noisy oracle as its PRM: no step is labelled and no PRM
trains, its searches are the same whether the oracle's reads cost nothing or a PRM's FLOPs, and
only the FLOPs differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_config import tiny_config, write_config
from test_pipeline import run_flow

from inferscale.report.files import SUMMARY_FILE
from inferscale.scores import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def oracle_experiment(tmp_path: Path, flops: str) -> Path:
    config = tiny_config(
        tmp_path / "runs",
        prm={"kind": "noisy_oracle", "oracle": {"auc": 0.9, "seed": 0, "flops": flops}},
        **{
            "evaluation.strategies": ["majority_vote", "weighted_vote", "rebase"],
            "evaluation.search.budgets": {"rebase": [2, 4]},
        },
    )
    return write_config(tmp_path / f"oracle-{flops}.yaml", config)


def points(root: Path, policy: str) -> dict[tuple[str, int, str], tuple[float, float]]:
    """(strategy, budget, question set) -> (accuracy, full FLOPs) of the policy's evaluation."""
    (evaluation,) = (root / "artifacts" / "evaluate").glob(f"{policy}-*")
    return {
        (p.strategy, p.budget, p.question_set): (p.accuracy, p.flops_full)
        for p in read_metrics(evaluation).points
    }


def completed(root: Path, stage: str) -> dict[str, int]:
    return {
        p.parent.name: p.stat().st_mtime_ns
        for p in (root / "artifacts" / stage).glob("*/_COMPLETE.json")
    }


def test_an_oracle_experiment_trains_no_prm_and_counts_its_reads_as_set(tmp_path):
    root = tmp_path / "runs" / "tiny"
    free_report = run_flow(oracle_experiment(tmp_path, "zero"))
    artifacts = {p.name for p in (root / "artifacts").iterdir()}
    assert artifacts == {"prepare_data", "sft", "evaluate", "analyze"}
    summary = json.loads((free_report / SUMMARY_FILE).read_text())
    assert summary["prm"] == {"kind": "noisy_oracle", "auc": 0.9, "seed": 0, "flops": "zero"}
    free = {name: points(root, name) for name in ("A", "B")}
    trained = completed(root, "sft")
    for evaluation in (root / "artifacts" / "evaluate").iterdir():
        evaluation.rename(evaluation.with_name("free-" + evaluation.name))

    priced_report = run_flow(oracle_experiment(tmp_path, "prm"))
    assert completed(root, "sft") == trained  # the same policies, reused
    assert json.loads((priced_report / SUMMARY_FILE).read_text())["prm"]["flops"] == "prm"
    for name in ("A", "B"):
        priced = points(root, name)
        assert priced.keys() == free[name].keys()
        for (strategy, budget, questions), (accuracy, flops) in priced.items():
            free_accuracy, free_flops = free[name][strategy, budget, questions]
            # The oracle scores each node alike in both runs: the same picks and searches.
            assert accuracy == free_accuracy
            if strategy == "majority_vote":
                assert flops == free_flops
            else:
                assert flops > free_flops
        for budget in (1, 2, 4):
            # Free reads: a weighted vote over the pool costs what its majority vote costs.
            pool = ("weighted_vote", budget, "all"), ("majority_vote", budget, "all")
            assert free[name][pool[0]][1] == free[name][pool[1]][1]
            assert priced[pool[0]][1] > priced[pool[1]][1]
