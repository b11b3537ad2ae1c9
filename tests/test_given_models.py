"""Policies and PRMs given as checkpoints: their identity keys the stages that read them, the
DAG skips their training, and a checkpoint that cannot be read is refused before any work."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from pipeline_config import tiny_config, write_config

from inferscale.config import ConfigError, check_run_inputs, load_config
from inferscale.models import checkpoints
from inferscale.models.checkpoints import checkpoint_identity, directory_digest
from inferscale.plan_status import why_run
from inferscale.single_stage import input_steps, selected_steps, selection_problem
from inferscale.stages import GIVEN_PRM, given_policy, plan


def model_folder(path: Path, weights: bytes = b"weights") -> Path:
    """A folder with a model's files (their content is all a key reads), older than the cache's
    racy window."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(weights)
    (path / "tokenizer.json").write_text("{}")
    old = time.time() - 60
    for f in path.iterdir():
        os.utime(f, (old, old))
    return path


def given_experiment(tmp_path: Path, policy: str, prm: str | None = None, **prm_settings) -> Path:
    """The tiny experiment with policy A given as `policy` (B still trained, and labelling the
    steps of the PRM that starts from it) or, with `prm`, a given Math-Shepherd PRM."""
    raw = tiny_config(tmp_path / "runs")
    raw["policies"][0] = {"name": "A", "checkpoint": policy}
    raw["prm"]["labels"]["policy"] = raw["prm"]["init_from"] = "B"
    if prm is not None:
        raw["prm"] = {"checkpoint": prm, "format": "math_shepherd", **prm_settings}
    return write_config(tmp_path / "exp.yaml", raw)


def test_a_folder_is_identified_by_its_files_content_not_its_place(tmp_path):
    first = model_folder(tmp_path / "a")
    same = model_folder(tmp_path / "elsewhere" / "b")
    assert directory_digest(first) == directory_digest(same)
    (same / "model.safetensors").write_bytes(b"other weights")
    assert directory_digest(first) != directory_digest(same)
    renamed = model_folder(tmp_path / "c")
    (renamed / "tokenizer.json").rename(renamed / "vocab.json")
    assert directory_digest(first) != directory_digest(renamed)
    # What a hub download leaves beside the files is no part of the model.
    (first / ".cache").mkdir()
    (first / ".cache" / "lock").write_text("x")
    assert directory_digest(first) == directory_digest(same.parent.parent / "a")


def test_the_hash_cache_spares_unchanged_files_and_never_hides_a_change(tmp_path, monkeypatch):
    folder = model_folder(tmp_path / "m")
    cache = tmp_path / "hashes.json"
    hashed = []
    real = checkpoints.sha256_file
    monkeypatch.setattr(checkpoints, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    first = directory_digest(folder, cache)
    assert len(hashed) == 3 and cache.is_file()
    hashed.clear()
    assert directory_digest(folder, cache) == first
    assert hashed == []
    # Replaced with the same size: a new inode and modification time say it changed.
    replacement = tmp_path / "new"
    replacement.write_bytes(b"WEIGHTS")
    replacement.replace(folder / "model.safetensors")
    changed = directory_digest(folder, cache)
    assert changed != first and hashed == ["model.safetensors"]
    # Just written: hashed again on every read until it is older than the racy window.
    hashed.clear()
    assert directory_digest(folder, cache) == changed
    assert hashed == ["model.safetensors"]
    # A cache that cannot be read costs time only.
    cache.write_text("not json")
    assert directory_digest(folder, cache) == changed


def test_a_hub_checkpoint_is_keyed_by_its_id_and_revision(tmp_path):
    assert checkpoint_identity("org/model", "abc123") == "hub:org/model@abc123"
    assert checkpoint_identity("org/model", None) == "hub:org/model@main"
    config = load_config(given_experiment(tmp_path, "org/model"))
    unpinned = plan(config)
    assert unpinned.evaluate["A"].material["inputs"][given_policy("A")] == "hub:org/model@main"
    policy = config.policies[0].model_copy(update={"revision": "abc"})
    pinned = plan(config.model_copy(update={"policies": [policy, config.policies[1]]}))
    assert pinned.evaluate["A"].material["inputs"][given_policy("A")] == "hub:org/model@abc"
    assert pinned.evaluate["A"].key != unpinned.evaluate["A"].key
    changed = {a.name for a, b in zip(pinned.all(), unpinned.all(), strict=True) if a.key != b.key}
    assert changed == {"evaluate/A", "analyze/report"}
    # Where A labels the PRM's steps (as the first policy does by default) and the PRM starts
    # from it, all that reads the labels or the PRM changes too.
    raw = tiny_config(tmp_path / "runs")
    raw["policies"][0] = {"name": "A", "checkpoint": "org/model"}
    labelled = load_config(write_config(tmp_path / "labels.yaml", raw))
    assert plan(labelled).label_steps.material["inputs"][given_policy("A")] == "hub:org/model@main"
    policy = labelled.policies[0].model_copy(update={"revision": "abc"})
    pinned = plan(labelled.model_copy(update={"policies": [policy, labelled.policies[1]]}))
    changed = {
        a.name for a, b in zip(pinned.all(), plan(labelled).all(), strict=True) if a.key != b.key
    }
    assert changed == {
        "label_steps/A",
        "train_prm/prm",
        "evaluate/A",
        "evaluate/B",
        "analyze/report",
    }


def test_replacing_a_file_of_a_given_policy_changes_the_keys_that_read_it(tmp_path):
    folder = model_folder(tmp_path / "policy")
    config = load_config(given_experiment(tmp_path, str(folder)))
    before = plan(config)
    assert "A" not in before.sft and "B" in before.sft  # a given policy is not trained
    assert before.evaluate["A"].material["inputs"][given_policy("A")].startswith("sha256:")
    before.evaluate["A"].path.mkdir(parents=True)
    before.evaluate["A"].mark_started()
    before.evaluate["A"].mark_complete({})
    (folder / "model.safetensors").write_bytes(b"fine-tuned further")
    after = plan(config)
    changed = {a.name for a, b in zip(before.all(), after.all(), strict=True) if a.key != b.key}
    assert changed == {"evaluate/A", "analyze/report"}
    assert why_run(after.evaluate["A"]) == ["input policy/A changed"]


def test_a_given_prm_skips_its_training_and_keys_its_readers(tmp_path):
    policy, prm = model_folder(tmp_path / "policy"), model_folder(tmp_path / "prm")
    heldout = {"source": "math_shepherd", "path": str(tmp_path / "heldout.jsonl")}
    config = load_config(given_experiment(tmp_path, str(policy), str(prm), heldout=heldout))
    p = plan(config)
    assert p.label_steps is None and p.train_prm is None
    assert [a.name for a in p.all()] == [
        "prepare_data/data",
        "sft/B",
        "measure_prm/prm",
        "evaluate/A",
        "evaluate/B",
        "analyze/report",
    ]
    for artifact in (p.measure_prm, *p.evaluate.values()):
        assert artifact.material["inputs"][GIVEN_PRM].startswith("sha256:")
        assert artifact.material["settings"]["prm"] == {"format": "math_shepherd"}
    assert set(p.analyze.material["inputs"]) == {"evaluate/A", "evaluate/B", "measure_prm/prm"}
    (prm / "model.safetensors").write_bytes(b"another PRM")
    after = plan(config)
    changed = {a.name for a, b in zip(p.all(), after.all(), strict=True) if a.key != b.key}
    assert changed == {"measure_prm/prm", "evaluate/A", "evaluate/B", "analyze/report"}
    # Without held-out labels there is nothing to measure it on.
    (tmp_path / "bare").mkdir()
    bare = plan(load_config(given_experiment(tmp_path / "bare", str(policy), str(prm))))
    assert bare.measure_prm is None
    assert set(bare.analyze.material["inputs"]) == {"evaluate/A", "evaluate/B"}


def test_running_one_stage_alone_knows_what_is_given(tmp_path):
    policy, prm = model_folder(tmp_path / "policy"), model_folder(tmp_path / "prm")
    heldout = {"source": "math_shepherd", "path": str(tmp_path / "heldout.jsonl")}
    path = given_experiment(tmp_path, str(policy), str(prm), heldout=heldout)
    config = load_config(path)
    p = plan(config)
    assert [s.name for s in selected_steps(config, p, "sft", None)] == ["sft-B"]
    evaluate_a = selected_steps(config, p, "evaluate", "A")[0]
    assert [s.name for s in input_steps(config, p, evaluate_a)] == ["prepare_data"]
    evaluate_b = selected_steps(config, p, "evaluate", "B")[0]
    assert [s.name for s in input_steps(config, p, evaluate_b)] == ["prepare_data", "sft-B"]
    analyze = selected_steps(config, p, "analyze", None)[0]
    assert [s.name for s in input_steps(config, p, analyze)][-1] == "measure_prm"
    assert input_steps(config, p, selected_steps(config, p, "measure_prm", None)[0]) == []
    given_sft = selection_problem(config, p, "sft", "A", [], "exp.yaml")
    assert "A is a given checkpoint, which no stage trains" in given_sft
    no_training = selection_problem(config, p, "train_prm", None, [], "exp.yaml")
    assert "no train_prm stage (its PRM is a given checkpoint)" in no_training


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda tmp: {"checkpoint": str(tmp / "missing")},
            "policies.0.checkpoint: {tmp}/missing does not exist; give a model folder or a hub id",
        ),
        (
            lambda tmp: {"checkpoint": str(tmp / "exp.yaml")},
            "policies.0.checkpoint: {tmp}/exp.yaml is a file",
        ),
        (
            lambda tmp: {"checkpoint": str((tmp / "empty").mkdir() or tmp / "empty")},
            "policies.0.checkpoint: {tmp}/empty has no config.json",
        ),
        (
            lambda tmp: {"checkpoint": str(model_folder(tmp / "m")), "revision": "abc"},
            "policies.0.revision: {tmp}/m is a local folder, and a revision picks the files of "
            "a hub checkpoint; drop revision",
        ),
    ],
)
def test_a_checkpoint_that_cannot_be_read_is_refused_before_any_work(tmp_path, change, expected):
    raw = tiny_config(tmp_path / "runs")
    raw["policies"][0] = {"name": "A", **change(tmp_path)}
    path = write_config(tmp_path / "exp.yaml", raw)
    with pytest.raises(ConfigError) as info:
        check_run_inputs(load_config(path), str(path))
    assert "\n" not in str(info.value)
    assert expected.format(tmp=tmp_path) in str(info.value)


@pytest.mark.parametrize(
    "policy, prm, expected",
    [
        (
            {"name": "A", "checkpoint": "org/m", "hidden_size": 64},
            None,
            "policies.0.hidden_size: belongs to a policy that is trained, and this one is a "
            "given checkpoint",
        ),
        (
            {"name": "A", "hidden_size": 64, "num_layers": 1, "num_heads": 2, "revision": "x"},
            None,
            "policies.0.revision: is a revision of a hub checkpoint, and this policy names none",
        ),
        (
            None,
            {"checkpoint": "org/prm", "max_steps": 10},
            "prm.max_steps: belongs to a PRM that is trained, and prm.checkpoint is given",
        ),
        (
            None,
            {"format": "qwen_prm", "labels": {"questions": 12}},
            "prm.format: 'qwen_prm' is the format of a given PRM, and no prm.checkpoint is given",
        ),
    ],
)
def test_settings_that_contradict_a_given_checkpoint_are_refused(tmp_path, policy, prm, expected):
    raw = tiny_config(tmp_path / "runs")
    if policy is not None:
        raw["policies"][0] = policy
    if prm is not None:
        raw["prm"] = prm
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path / "exp.yaml", raw))
    assert expected in str(info.value)


def test_an_experiment_that_trains_nothing_needs_no_deepspeed_config(tmp_path):
    raw = tiny_config(tmp_path / "runs")
    raw["policies"] = [{"name": "A", "checkpoint": "org/a"}, {"name": "B", "checkpoint": "org/b"}]
    raw["prm"] = {"checkpoint": "org/prm", "format": "math_shepherd"}
    del raw["sft"]
    config = load_config(write_config(tmp_path / "exp.yaml", raw))
    p = plan(config)
    assert p.sft == {} and p.train_prm is None and p.label_steps is None
    assert [a.name for a in p.all()] == [
        "prepare_data/data",
        "evaluate/A",
        "evaluate/B",
        "analyze/report",
    ]
    assert "every policy is a given checkpoint" in selection_problem(
        config, p, "sft", None, [], "exp.yaml"
    )


def test_flow_parameters_make_local_checkpoints_absolute(tmp_path, monkeypatch):
    from inferscale.flows.parameters import flow_parameters

    folder = model_folder(tmp_path / "policy")
    monkeypatch.chdir(tmp_path)
    config = load_config(given_experiment(tmp_path, "policy", "org/prm"))
    parameters = flow_parameters(config, "exp.yaml")
    assert parameters["config"]["policies"][0]["checkpoint"] == str(folder.resolve())
    assert parameters["config"]["prm"]["checkpoint"] == "org/prm"
    # The key does not depend on where the run starts: the folder's content keys it.
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved / "policy")
    monkeypatch.chdir(moved)
    moved_plan = plan(load_config(tmp_path / "exp.yaml"))
    assert moved_plan.evaluate["A"].key == plan(config).evaluate["A"].key


def test_a_chat_template_is_rendered_with_each_given_policys_tokenizer_before_any_work(tmp_path):
    from inferscale.models.tiny_checkpoints import build_tiny_prm

    plain = build_tiny_prm(tmp_path / "plain", "math_shepherd")  # a tokenizer without a template
    chat = build_tiny_prm(tmp_path / "chat", "rlhflow")  # Llama-3.1's template
    raw = tiny_config(tmp_path / "runs")
    raw["policies"] = [{"name": "A", "checkpoint": str(chat)}]
    raw["prm"] = None
    raw["evaluation"]["strategies"] = ["greedy", "majority_vote"]
    raw["data"]["format"] = {"chat_template": "tokenizer", "system_prompt": "Be brief."}
    path = write_config(tmp_path / "exp.yaml", raw)
    check_run_inputs(load_config(path), str(path))
    raw["policies"].append({"name": "B", "checkpoint": str(plain)})
    path = write_config(tmp_path / "exp.yaml", raw)
    with pytest.raises(ConfigError) as info:
        check_run_inputs(load_config(path), str(path))
    assert "\n" not in str(info.value)
    assert "data.format.chat_template: for policy B:" in str(info.value)


@pytest.mark.parametrize("built, claimed", [("math_shepherd", "qwen_prm"), ("qwen_prm", "rlhflow")])
def test_a_prm_format_the_checkpoint_lacks_is_refused_before_any_work(tmp_path, built, claimed):
    from inferscale.models.tiny_checkpoints import build_tiny_prm

    folder = build_tiny_prm(tmp_path / built, built)
    raw = tiny_config(tmp_path / "runs")
    raw["prm"] = {"checkpoint": str(folder), "format": claimed}
    path = write_config(tmp_path / "exp.yaml", raw)
    with pytest.raises(ConfigError) as info:
        check_run_inputs(load_config(path), str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: prm.format: {claimed} does not fit prm.checkpoint")
    raw["prm"]["format"] = built
    path = write_config(tmp_path / "exp.yaml", raw)
    check_run_inputs(load_config(path), str(path))


def test_a_missing_folder_under_a_local_one_is_no_hub_id(tmp_path, monkeypatch):
    """`runs/model` has a hub id's form; where `runs` is a folder here, it is a path."""
    monkeypatch.chdir(tmp_path)
    raw = tiny_config(tmp_path / "runs")
    (tmp_path / "runs").mkdir()
    raw["policies"][0] = {"name": "A", "checkpoint": "runs/model"}
    path = write_config(tmp_path / "exp.yaml", raw)
    with pytest.raises(ConfigError, match="policies.0.checkpoint: runs/model does not exist"):
        check_run_inputs(load_config(path), str(path))
    raw["policies"][0] = {"name": "A", "checkpoint": "org/model"}
    check_run_inputs(load_config(write_config(path, raw)), str(path))


def test_generation_beyond_a_given_policys_context_is_refused(tmp_path):
    folder = model_folder(tmp_path / "policy")
    (folder / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 20}')
    with pytest.raises(ConfigError) as info:
        load_config(given_experiment(tmp_path, str(folder)))
    assert "generation.max_new_tokens: 24 new tokens after a prompt of up to" in str(info.value)
    assert "policy A's context of 20 tokens (its max_position_embeddings)" in str(info.value)
