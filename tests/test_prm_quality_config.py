"""The PRM-quality study's settings, its refusals, and the keys of its stages: the experiment's
own PRM is found again, every other PRM keys apart, and nothing of the experiment is rekeyed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from inferscale.cli import main
from inferscale.config import ConfigError, load_config
from inferscale.prm_quality_config import balance_width, load_study
from inferscale.prm_quality_plan import study_plan, variants
from inferscale.stages import plan

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
STUDY_RAW = yaml.safe_load((CONFIGS / "prm_quality.yaml").read_text())


def write_study(tmp: Path, study: dict | None = None, experiment: dict | None = None) -> Path:
    """A study file in `tmp` naming a copy of the default experiment that writes under `tmp`."""
    raw = copy.deepcopy(yaml.safe_load((CONFIGS / "default.yaml").read_text()))
    raw["output_dir"] = str(tmp / "runs")
    raw["sft"]["deepspeed"] = str(CONFIGS / "deepspeed" / "zero2.json")
    raw.update(experiment or {})
    (tmp / "experiment.yaml").write_text(yaml.safe_dump(raw))
    body = {**copy.deepcopy(STUDY_RAW), "experiment": "experiment.yaml", **(study or {})}
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_the_shipped_study_reads_the_default_and_lists_its_variants():
    study, config = load_study(CONFIGS / "prm_quality.yaml")
    assert config.name == "default"
    names = [v.name for v in variants(study)]
    assert names == [
        "learned-rollout-seed0",
        "learned-rollout-seed1",
        "learned-rollout-seed2",
        "learned-exact-seed0",
        "noisy-0.7",
        "noisy-0.8",
        "noisy-0.9",
        "noisy-0.95",
        "oracle",
    ]
    assert balance_width(study, config) == 8
    assert study.balance.temperatures == [0.05, 0.1, 0.2, 0.5, 1.0]


def test_the_experiments_seed_on_rollout_labels_is_the_experiments_own_prm():
    study, config = load_study(CONFIGS / "prm_quality.yaml")
    sp = study_plan(study, config)
    base = plan(config)
    # The study rekeys nothing of the experiment.
    assert [a.path for a in sp.base.all()] == [a.path for a in base.all()]
    assert sp.prms["learned-rollout-seed0"] == base.train_prm
    others = [sp.prms[n] for n in ("learned-rollout-seed1", "learned-rollout-seed2")]
    exact = sp.prms["learned-exact-seed0"]
    keys = {a.key for a in [*others, exact, base.train_prm]}
    assert len(keys) == 4
    for a in others:
        assert a.material["settings"] == {
            **base.train_prm.material["settings"],
            "seed": a.material["settings"]["seed"],
        }
        assert a.material["inputs"] == base.train_prm.material["inputs"]
        assert a.material["code"] == base.train_prm.material["code"]
    # The exact-label PRM learns from the same solutions, relabelled: only its labels differ.
    assert exact.material["settings"] == base.train_prm.material["settings"]
    assert sp.exact_labels.name in exact.material["inputs"]
    assert base.label_steps.name not in exact.material["inputs"]
    assert sp.exact_labels.material["inputs"] == {base.label_steps.name: base.label_steps.key}


def test_variant_keys_follow_what_they_depend_on(tmp_path):
    study, config = load_study(CONFIGS / "prm_quality.yaml")
    sp = study_plan(study, config)
    # A variant is keyed on both evaluations it reads, the held-out labels and its PRM.
    for v in sp.variants:
        inputs = sp.evaluations[v.name].material["inputs"]
        assert {a.name for a in sp.base.evaluate.values()} <= set(inputs)
        assert inputs[sp.base.label_steps.name] == sp.base.label_steps.key
        if v.kind == "learned":
            assert inputs["prm"] == sp.prms[v.name].key
    assert len({a.key for a in sp.evaluations.values()}) == len(sp.variants)
    # Another oracle seed rekeys the oracles only; fewer seeds leave the others' keys.
    other = study.model_copy(update={"oracles": study.oracles.model_copy(update={"seed": 3})})
    sp2 = study_plan(other, config)
    for v in sp.variants:
        same = sp2.evaluations[v.name].key == sp.evaluations[v.name].key
        assert same == (v.kind == "learned")
    fewer = study.model_copy(update={"learned": study.learned.model_copy(update={"rollout": [0]})})
    sp3 = study_plan(fewer, config)
    assert sp3.evaluations["noisy-0.8"].key == sp.evaluations["noisy-0.8"].key
    assert sp3.report.key != sp.report.key


@pytest.mark.parametrize(
    ("study", "experiment", "says"),
    [
        ({"oracles": {"aucs": [0.5]}}, None, ("oracles.aucs.0", "greater than 0.5")),
        ({"oracles": {"aucs": [1.2]}}, None, ("oracles.aucs.0", "less than or equal to 1")),
        ({"oracles": {"aucs": [0.8, 0.8]}}, None, ("oracles.aucs", "repeat")),
        ({"learned": {"rollout": [1, 1]}}, None, ("learned.rollout", "repeat")),
        ({"strategies": ["majority_vote"]}, None, ("strategies", "does not read a PRM")),
        ({"strategies": ["rebse"]}, None, ("strategies", "unknown strategy")),
        ({"balance": {"temperatures": [0.0]}}, None, ("balance.temperatures.0", "greater than 0")),
        ({"orcales": {}}, None, ("orcales", "unknown key")),
        ({"experiment": "missing.yaml"}, None, ("experiment", "does not exist")),
        (
            {"strategies": ["weighted_vote"]},
            None,
            ("balance.temperatures", "add rebase"),
        ),
        (
            None,
            {"evaluation": {"strategies": ["greedy", "weighted_vote"]}},
            ("experiment", "majority_vote"),
        ),
        (
            None,
            {
                "prm": {
                    "checkpoint": "peiyi9979/math-shepherd-mistral-7b-prm",
                    "format": "math_shepherd",
                }
            },
            ("experiment", "prm.labels"),
        ),
        (
            None,
            {
                "prm": {
                    "labels": {"kind": "exact", "policy": "S", "questions": 1600},
                    "init_from": "S",
                }
            },
            ("experiment", "kind: rollout"),
        ),
        (
            None,
            {"prm": {"kind": "noisy_oracle", "oracle": {"auc": 0.9}}},
            ("experiment", "not a given PRM", "nor an oracle (prm.kind)"),
        ),
    ],
    ids=lambda x: None,
)
def test_a_bad_study_is_refused_in_one_line_naming_the_field(tmp_path, study, experiment, says):
    path = write_study(tmp_path, study, experiment)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    for part in says:
        assert part in message, message


def test_the_command_refuses_a_bad_study_and_an_unfinished_experiment_before_any_work(
    tmp_path, capsys
):
    bad = write_study(tmp_path, {"oracles": {"aucs": [2.0]}})
    assert main(["prm-quality", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(str(bad)) and "oracles.aucs.0" in err and "\n" not in err
    good = write_study(tmp_path)
    assert main(["prm-quality", str(good)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has not finished" in err and "inferscale run" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()  # nothing was written


def test_a_non_synthetic_experiment_is_refused():
    config = load_config(CONFIGS / "public_prm.yaml")
    from inferscale.prm_quality_config import PRMQualityConfig, check_study

    with pytest.raises(ConfigError, match="synthetic task"):
        check_study(PRMQualityConfig(experiment="public_prm.yaml"), config, "study.yaml")
