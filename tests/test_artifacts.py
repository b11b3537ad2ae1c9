"""Content-hash keyed stage artifacts: keys, invalidation downstream, completion, key records.

Every config field's effect on keys is in tests/test_keys.py, code's in tests/test_stage_code.py.
"""

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from inferscale import artifacts
from inferscale.artifacts import COMPLETE_MARKER, KEY_RECORD, stage_artifact
from inferscale.config import parse_config
from inferscale.stages import STAGES, plan, stages_to_refresh

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_RAW = yaml.safe_load((CONFIGS / "default.yaml").read_text())
# The default labels steps with S (L completing), starts the PRM from S, and evaluates both
# policies with PRM strategies: the PRM sits between training and every evaluation.
PRM_DOWN = {"label_steps", "train_prm", "evaluate.S", "evaluate.L", "analyze"}
SFT_DOWN = {"sft.S", "sft.L", *PRM_DOWN}


def make_config(base_dir: Path = CONFIGS, **updates):
    """The default config with dotted-path updates, e.g. `**{"sft.learning_rate": 1e-3}`."""
    raw = copy.deepcopy(DEFAULT_RAW)
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[leaf] = value
    return parse_config(raw, base_dir=base_dir)


def keys(config) -> dict[str, str]:
    p = plan(config)
    out = {
        "prepare_data": p.prepare_data.key,
        "label_steps": p.label_steps.key,
        "train_prm": p.train_prm.key,
        "analyze": p.analyze.key,
    }
    out.update({f"sft.{name}": art.key for name, art in p.sft.items()})
    out.update({f"evaluate.{name}": art.key for name, art in p.evaluate.items()})
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    assert before.keys() == after.keys()
    return {stage for stage in before if before[stage] != after[stage]}


@pytest.fixture(scope="module")
def default_keys():
    return keys(make_config())


# ---------------------------------------------------------------- keys and the plan


def test_same_config_gives_same_keys(default_keys):
    assert keys(make_config()) == default_keys
    assert len(set(default_keys.values())) == len(default_keys)


def test_plan_paths_are_stage_label_and_key_under_the_run_root(tmp_path):
    config = make_config(output_dir=str(tmp_path))
    p = plan(config)
    artifacts_dir = tmp_path / "default" / "artifacts"
    assert p.root == tmp_path / "default"
    assert p.prepare_data.path == artifacts_dir / "prepare_data" / f"data-{p.prepare_data.key}"
    assert p.sft["S"].path == artifacts_dir / "sft" / f"S-{p.sft['S'].key}"
    assert p.evaluate["L"].path == artifacts_dir / "evaluate" / f"L-{p.evaluate['L'].key}"
    assert p.analyze.path == artifacts_dir / "analyze" / f"report-{p.analyze.key}"
    assert p.label_steps.path == artifacts_dir / "label_steps" / f"S-{p.label_steps.key}"
    assert p.train_prm.path == artifacts_dir / "train_prm" / f"prm-{p.train_prm.key}"
    assert [a.stage for a in p.all()] == [
        "prepare_data",
        "sft",
        "sft",
        "label_steps",
        "train_prm",
        "evaluate",
        "evaluate",
        "analyze",
    ]
    assert not (tmp_path / "default").exists()  # planning writes nothing


def test_rollout_temperature_left_to_default_and_given_equal_make_the_same_labels():
    solutions = {"prm.labels.temperature": 0.9}
    implicit = keys(make_config(**solutions, **{"prm.labels.rollout_temperature": None}))
    explicit = keys(make_config(**solutions, **{"prm.labels.rollout_temperature": 0.9}))
    assert implicit == explicit


def test_deepspeed_file_content_changes_sft_and_downstream_keys(tmp_path, default_keys):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    assert keys(make_config(base_dir=configs)) == default_keys  # moved, same content
    ds = configs / "deepspeed" / "zero2.json"
    content = json.loads(ds.read_text())
    content["gradient_clipping"] = 0.5
    ds.write_text(json.dumps(content))
    assert changed(default_keys, keys(make_config(base_dir=configs))) == SFT_DOWN


# ---------------------------------------------------------------- stages_to_refresh


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        # A given PRM's measurement reads its checkpoint and a labelled file, no prepared data.
        (["prepare_data"], set(STAGES) - {"measure_prm"}),
        (["measure_prm"], {"measure_prm", "analyze"}),
        (["sft"], {"sft", "label_steps", "train_prm", "evaluate", "analyze"}),
        (["label_steps"], {"label_steps", "train_prm", "evaluate", "analyze"}),
        (["train_prm"], {"train_prm", "evaluate", "analyze"}),
        (["evaluate"], {"evaluate", "analyze"}),
        (["analyze"], {"analyze"}),
        (["analyze", "sft"], {"sft", "label_steps", "train_prm", "evaluate", "analyze"}),
        ([], set()),
    ],
)
def test_stages_to_refresh_adds_every_downstream_stage(requested, expected):
    assert stages_to_refresh(requested) == frozenset(expected)


def test_stages_to_refresh_refuses_an_unknown_stage_naming_the_stages():
    with pytest.raises(ValueError) as info:
        stages_to_refresh(["sft", "train"])
    message = str(info.value)
    assert "'train'" in message
    assert "'sft'" not in message.split(";")[0]
    for stage in STAGES:
        assert stage in message


# ---------------------------------------------------------------- StageArtifact


def test_artifact_is_complete_only_after_mark_complete(tmp_path):
    art = stage_artifact(tmp_path, "sft", "S", {"x": 1}, {}, {})
    assert not art.complete
    art.path.mkdir(parents=True)
    (art.path / "model.bin").write_text("weights")
    assert not art.complete
    art.mark_complete({"seconds": 1.5})
    assert art.complete
    marker = json.loads((art.path / COMPLETE_MARKER).read_text())
    digest = hashlib.sha256(b"weights").hexdigest()
    assert marker == {
        "stage": "sft",
        "key": art.key,
        "seconds": 1.5,
        "files": {"model.bin": {"size": 7, "sha256": digest}},
    }
    assert sorted(f.name for f in art.path.iterdir()) == [COMPLETE_MARKER, "model.bin"]


def finished_artifact(tmp_path):
    art = stage_artifact(tmp_path, "sft", "S", {"x": 1}, {}, {})
    (art.path / "sub").mkdir(parents=True)
    (art.path / "model.safetensors").write_bytes(b"w" * 100)
    (art.path / "sub" / "config.json").write_text("{}")
    art.mark_complete({})
    return art


def test_a_whole_finished_artifact_shows_no_damage(tmp_path):
    assert finished_artifact(tmp_path).damage() == []


@pytest.mark.parametrize(
    "harm, said",
    [
        (lambda p: (p / "model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda p: (p / "model.safetensors").write_bytes(b"w" * 10), "has 10 bytes, not 100"),
        (lambda p: (p / "model.safetensors").write_bytes(b"x" * 100), "has changed"),
        (lambda p: (p / "sub" / "config.json").unlink(), "sub/config.json is missing"),
        (lambda p: (p / COMPLETE_MARKER).write_text("{"), "is unreadable"),
    ],
    ids=["deleted", "truncated", "same-size-other-bytes", "nested-file", "marker"],
)
def test_damage_to_a_finished_artifact_is_named(tmp_path, harm, said):
    art = finished_artifact(tmp_path)
    harm(art.path)
    assert art.complete
    assert any(said in problem for problem in art.damage()), art.damage()


def test_large_files_are_recorded_by_size_alone(tmp_path, monkeypatch):

    monkeypatch.setattr(artifacts, "CHECKSUM_MAX_BYTES", 50)
    art = finished_artifact(tmp_path)
    files = json.loads((art.path / COMPLETE_MARKER).read_text())["files"]
    assert files["model.safetensors"] == {"size": 100}
    assert "sha256" in files["sub/config.json"]


def test_a_marker_written_before_files_were_recorded_is_trusted(tmp_path):
    art = finished_artifact(tmp_path)
    (art.path / COMPLETE_MARKER).write_text(json.dumps({"stage": "sft", "key": art.key}))
    (art.path / "model.safetensors").unlink()
    assert art.damage() == []


def test_invalidate_makes_a_finished_artifact_unfinished_and_keeps_its_files(tmp_path):
    art = finished_artifact(tmp_path)
    art.invalidate()
    assert not art.complete and (art.path / "model.safetensors").is_file()


def test_a_new_artifact_object_for_the_same_key_sees_completion(tmp_path):
    first = stage_artifact(tmp_path, "evaluate", "S", {"x": 1}, {}, {})
    first.path.mkdir(parents=True)
    first.mark_complete({})
    again = stage_artifact(tmp_path, "evaluate", "S", {"x": 1}, {}, {})
    other = stage_artifact(tmp_path, "evaluate", "S", {"x": 2}, {}, {})
    assert again == first and again.complete
    assert other.path != first.path and not other.complete


def test_clear_removes_the_directory_and_completion(tmp_path):
    art = stage_artifact(tmp_path, "analyze", "report", {"x": 1}, {}, {})
    (art.path / "sub").mkdir(parents=True)
    (art.path / "sub" / "f.txt").write_text("x")
    art.mark_complete({})
    art.clear()
    assert not art.path.exists()
    assert not art.complete
    assert (tmp_path / "analyze").is_dir()  # only the artifact's own directory goes
    art.clear()  # clearing a missing directory is fine


def test_stage_artifact_key_depends_on_stage_and_material_not_order(tmp_path):
    a = stage_artifact(tmp_path, "sft", "S", {"a": 1, "b": [1, 2]}, {}, {})
    assert a.key == stage_artifact(tmp_path, "sft", "S", {"b": [1, 2], "a": 1}, {}, {}).key
    assert a.key != stage_artifact(tmp_path, "evaluate", "S", {"a": 1, "b": [1, 2]}, {}, {}).key
    assert a.key != stage_artifact(tmp_path, "sft", "S", {"a": 1, "b": [2, 1]}, {}, {}).key
    assert a.key == stage_artifact(tmp_path, "sft", "L", {"a": 1, "b": [1, 2]}, {}, {}).key
    assert a.path == tmp_path / "sft" / f"S-{a.key}"


def test_a_started_stage_records_what_its_key_hashes(tmp_path):
    art = stage_artifact(tmp_path, "sft", "S", {"lr": (1, 2)}, {"prepare_data/data": "k"}, {})
    art.path.mkdir(parents=True)
    art.mark_started()
    recorded = json.loads((art.path / KEY_RECORD).read_text())
    assert recorded == art.material == art.recorded_material()
    assert recorded == {
        "stage": "sft",
        "settings": {"lr": [1, 2]},
        "inputs": {"prepare_data/data": "k"},
        "code": {},
    }
    assert art.name == "sft/S"


def test_finished_before_is_the_latest_finished_directory_of_the_same_label(tmp_path):
    old, newer, now = (stage_artifact(tmp_path, "sft", "S", {"v": v}, {}, {}) for v in (1, 2, 3))
    other_label = stage_artifact(tmp_path, "sft", "S2", {"v": 4}, {}, {})
    assert now.finished_before() is None
    for i, art in enumerate((old, newer, other_label)):
        art.path.mkdir(parents=True)
        art.mark_complete({})
        os.utime(art.path / COMPLETE_MARKER, (1000 + i, 1000 + i))
    unfinished = stage_artifact(tmp_path, "sft", "S", {"v": 5}, {}, {})
    unfinished.path.mkdir(parents=True)
    found = now.finished_before()
    assert (found.path, found.key, found.label) == (newer.path, newer.key, "S")
    assert newer.finished_before().path == old.path
