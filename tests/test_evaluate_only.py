"""An experiment that trains nothing: a policy from a local folder and a PRM given in each format
the tool reads run through the flow, resume after a kill, and are analysed as a trained pair."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pipeline_config import kill_once_written, tiny_config, write_config

from inferscale.config import load_config
from inferscale.data.steps import StepFormat
from inferscale.data.synthetic_labels import write_rows
from inferscale.models.example_checkpoints import heldout_rows
from inferscale.models.tiny_checkpoints import build_tiny_prm
from inferscale.models.tiny_policy import TinyTask, build_tiny_policy
from inferscale.search.registry import STRATEGIES
from inferscale.stages import plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

TASK = TinyTask(modulus=20, levels=(1, 2), train_size=400, test_size=16)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A briefly trained policy, a random PRM in each format, held-out labelled solutions."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {
        "policy": build_tiny_policy(root / "policy", TASK, steps=150, hidden_size=64, num_heads=2)
    }
    for prm_format in ("inferscale", "math_shepherd", "qwen_prm", "rlhflow"):
        out[prm_format] = build_tiny_prm(root / prm_format, prm_format)
    out["heldout"] = write_rows(root / "heldout.jsonl", heldout_rows(TASK, StepFormat(), 6))
    return out


def evaluate_only(tmp_path: Path, checkpoints: dict[str, Path], prm_format: str, **over) -> dict:
    """The tiny experiment with no sft section: the policy and the PRM given."""
    raw = tiny_config(
        tmp_path / "runs",
        **{
            "data.arithmetic.modulus": TASK.modulus,
            "data.arithmetic.train_size": TASK.train_size,
            "data.arithmetic.operations": list(TASK.operations),
            "data.arithmetic.any_order": TASK.any_order,
            "evaluation.budgets": [1, 2, 4],
            **over,
        },
    )
    del raw["sft"]
    raw["policies"] = [{"name": "given", "checkpoint": str(checkpoints["policy"])}]
    raw["prm"] = {
        "checkpoint": str(checkpoints[prm_format]),
        "format": prm_format,
        "heldout": {"source": "math_shepherd", "path": str(checkpoints["heldout"])},
    }
    return raw


def run_flow(config_path: Path) -> str:
    from inferscale.flows.parameters import flow_parameters
    from inferscale.flows.pipeline import experiment_flow

    return experiment_flow(**flow_parameters(load_config(config_path), str(config_path)))


def test_an_experiment_of_given_checkpoints_resumes_after_a_kill(
    tmp_path, checkpoints, monkeypatch
):
    # A pool of 8 samples: the laws are fitted on k <= 2 and judged on k = 4, 8.
    raw = evaluate_only(
        tmp_path,
        checkpoints,
        "math_shepherd",
        **{"generation.batch_size": 16, "evaluation.budgets": [1, 2, 4, 8]},
    )
    raw["analysis"] = {"fit_fraction": 0.25, "bootstrap": 20}
    config_path = write_config(tmp_path / "given.yaml", raw)
    p = plan(load_config(config_path))
    assert p.sft == {} and p.label_steps is None and p.train_prm is None
    pool_file = p.evaluate["given"].path / "samples-n8.jsonl"
    written = kill_once_written(config_path, tmp_path, pool_file, 4)
    assert 4 <= len(written) < 16 and not p.evaluate["given"].complete

    import inferscale.tasks.evaluate as evaluate_module

    requested: list[str] = []
    real_load = evaluate_module.load_backend

    def recording_backend(generation, model_dir):
        assert model_dir == str(checkpoints["policy"].resolve())  # the folder, read in place
        backend = real_load(generation, model_dir)
        real_generate = backend.generate

        def generate(requests):
            # The pool's requests: whole solutions (a tree search's stop at a step).
            requested.extend(r.prompt for r in requests if r.n == 8 and not r.stop)
            return real_generate(requests)

        backend.generate = generate
        return backend

    monkeypatch.setattr(evaluate_module, "load_backend", recording_backend)
    report_dir = Path(run_flow(config_path))

    # The pool's questions written before the kill were not generated again.
    assert len(requested) == 16 - len(written)
    assert pool_file.read_text().splitlines()[: len(written)] == written
    assert p.evaluate["given"].complete and p.measure_prm.complete and p.analyze.complete
    summary = json.loads((report_dir / "summary.json").read_text())
    heldout = summary["prm"]
    assert heldout["solutions"] == 12 and 0 <= heldout["step_auc"] <= 1
    assert (report_dir / "report.html").is_file()
    assert set(pd.read_csv(report_dir / "points.csv")["strategy"]) == set(STRATEGIES)
    assert summary["coverage"]["given"]["fits"]  # the laws are fitted as for a trained policy
    # A second run finds every stage finished.
    assert run_flow(config_path) == str(report_dir)


@pytest.mark.parametrize("prm_format", ["inferscale", "qwen_prm", "rlhflow"])
def test_each_prm_format_scores_the_searches_through_the_flow(
    tmp_path, checkpoints, prm_format, monkeypatch
):
    from inferscale.models.prm_scorer import PRMScorer

    opened = []
    real_open = PRMScorer.from_pretrained.__func__

    def recording_open(cls, model_dir, *args, **kwargs):
        opened.append((str(model_dir), kwargs.get("prm_format")))
        return real_open(cls, model_dir, *args, **kwargs)

    monkeypatch.setattr(PRMScorer, "from_pretrained", classmethod(recording_open))
    raw = evaluate_only(
        tmp_path,
        checkpoints,
        prm_format,
        **{
            "data.arithmetic.test_size": 8,
            "evaluation.strategies": ["greedy", "weighted_vote", "rebase"],
            "evaluation.search": {
                "budgets": {"rebase": [2]},
                "max_depth": 3,
                "max_step_tokens": 12,
            },
        },
    )
    config_path = write_config(tmp_path / "given.yaml", raw)
    report_dir = Path(run_flow(config_path))
    assert set(opened) == {(str(checkpoints[prm_format].resolve()), prm_format)}
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["prm"]["solutions"] == 12
    strategies = set(pd.read_csv(report_dir / "points.csv")["strategy"])
    assert strategies == {"greedy", "weighted_vote", "rebase"}
