"""The PRM-quality study end to end on the tiny experiment: it reuses the experiment's stages
(no policy trained, no step labelled by rollouts), trains only the PRMs the experiment lacks,
evaluates every variant, reports, and on a second run finds everything done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pipeline_config import tiny_config, write_config
from test_pipeline import run_flow

from inferscale.config import load_config
from inferscale.flows.parameters import flow_parameters
from inferscale.flows.pipeline import experiment_flow
from inferscale.prm_quality_config import load_study
from inferscale.prm_quality_plan import study_plan
from inferscale.stages import plan
from inferscale.tasks import label_steps

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

STUDY = {
    "experiment": "tiny.yaml",
    "learned": {"rollout": [0, 1], "exact": [0]},
    "oracles": {"aucs": [0.8, 1.0], "seed": 0, "flops": "prm"},
    "strategies": ["weighted_vote", "best_of_n", "rebase"],
    "balance": {"temperatures": [0.1, 0.5], "width": 2},
}


def markers(root: Path, stage: str) -> dict[str, float]:
    """Each finished directory of a stage, with when it was marked finished."""
    return {
        p.parent.name: p.stat().st_mtime_ns
        for p in (root / "artifacts" / stage).glob("*/_COMPLETE.json")
    }


def forbid(monkeypatch, target: str) -> None:
    def fail(*args, **kwargs):
        raise AssertionError(f"{target} was called: the study must reuse that stage")

    monkeypatch.setattr(target, fail)


def test_the_study_reuses_the_experiment_and_computes_only_what_reads_the_prm(
    tmp_path, monkeypatch
):
    from inferscale.flows.prm_quality import prm_quality_flow

    config_path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    run_flow(config_path)
    root = tmp_path / "runs" / "tiny"
    kept = {s: markers(root, s) for s in ("prepare_data", "sft", "label_steps", "evaluate")}
    prms_before = markers(root, "train_prm")
    study_path = tmp_path / "study.yaml"
    study_path.write_text(yaml.safe_dump(STUDY))
    forbid(monkeypatch, "inferscale.tasks.sft.run_sft")
    backend = label_steps.load_backend
    forbid(monkeypatch, "inferscale.tasks.label_steps.load_backend")

    report = Path(prm_quality_flow(study_path=str(study_path)))

    for stage, before in kept.items():
        assert markers(root, stage) == before, f"{stage} was computed again"
    trained = markers(root, "train_prm")
    assert set(prms_before) < set(trained)
    assert sorted(n.rsplit("-", 1)[0] for n in set(trained) - set(prms_before)) == [
        "prm-exact-seed0",
        "prm-rollout-seed1",
    ]
    study, config = load_study(study_path)
    sp = study_plan(study, config)
    assert all(a.complete for a in sp.all())
    assert report == sp.report.path
    # The experiment's own PRM reads through the experiment's stores: nothing of it is redone.
    own = sp.evaluations["learned-rollout-seed0"].path
    for policy in ("A", "B"):
        assert not list((own / policy).glob("samples-*-prm.jsonl"))
        assert not (own / policy / "rebase-b2.jsonl").exists()
        assert (own / policy / "rebase-b2-tb0.5.jsonl").is_file()
    other = sp.evaluations["learned-rollout-seed1"].path
    assert list((other / "A").glob("samples-*-prm.jsonl"))
    # The exact labels relabel the experiment's solutions, step for step.
    rollout = (sp.base.label_steps.path / "labels.jsonl").read_text().splitlines()
    exact = (sp.exact_labels.path / "labels.jsonl").read_text().splitlines()
    assert [json.loads(r)["steps"] for r in rollout] == [json.loads(r)["steps"] for r in exact]
    oracle = json.loads((sp.evaluations["oracle"].path / "heldout.json").read_text())
    steps, valid = oracle["steps"], oracle["exact_positive_steps"]
    # The tiny policies' held-out steps may all be wrong: then no AUC can be measured.
    assert oracle["step_auc_exact"] == (1.0 if 0 < valid < steps else None)
    summary = json.loads((report / "prm_quality.json").read_text())
    assert summary  # its content is tested on exact inputs in test_prm_quality_analysis.py
    for name in ("prm_quality.html", "prm_quality.csv", "prm_quality_gain.png"):
        assert (report / name).is_file()

    # A noisy oracle's search is the same in another run, byte for byte.
    noisy = sp.evaluations["noisy-0.8"].path
    stores = {p.relative_to(noisy): p.read_bytes() for p in noisy.rglob("rebase-*.jsonl")}
    assert stores
    sp.evaluations["noisy-0.8"].clear()
    sp.report.clear()
    # A second run finds the rest finished, and computes the removed variant alike.
    done = {s: markers(root, s) for s in ("train_prm", "exact_labels")}
    forbid(monkeypatch, "inferscale.tasks.train_prm.run_prm_training")
    prm_quality_flow(study_path=str(study_path))
    assert {s: markers(root, s) for s in done} == done
    assert {p.relative_to(noisy): p.read_bytes() for p in noisy.rglob("rebase-*.jsonl")} == stores

    # The experiment with `prm.labels.kind: exact` samples the same solutions from the same
    # seeds and labels them as the study relabels them: no rollouts, one backend.
    raw = tiny_config(tmp_path / "runs")
    del raw["prm"]["labels"]["rollouts_per_step"]
    raw["prm"]["labels"]["kind"] = "exact"
    exact_path = write_config(tmp_path / "tiny-exact.yaml", raw)
    opened = []
    monkeypatch.setattr(
        "inferscale.tasks.label_steps.load_backend",
        lambda *args: opened.append(args) or backend(*args),
    )
    exact_config = load_config(exact_path)
    parameters = flow_parameters(exact_config, str(exact_path), only="label_steps")
    experiment_flow(**parameters)
    own = plan(exact_config).label_steps
    assert own.complete and own.path != sp.base.label_steps.path and len(opened) == 1
    for name in ("labels.jsonl", "heldout.jsonl"):
        assert (own.path / name).read_bytes() == (sp.exact_labels.path / name).read_bytes()
