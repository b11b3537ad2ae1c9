"""SFT under the real `deepspeed` launcher with two ranks on CPU, logging to W&B offline."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pipeline_config import REPO, tiny_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from inferscale.config import parse_config
from inferscale.data.prepare import TOKENIZER_DIR, TRAIN_FILE, prepare_data, step_format
from inferscale.models.divergence import TrainingDiverged, check_finite
from inferscale.models.launch import (
    TrainingFailed,
    clear_stale_build_lock,
    free_port,
    op_build_lock,
    run_sft,
    sft_spec,
)
from inferscale.models.processes import OWNER_ENV, SHM, owner_token, remove_shared_buffers
from inferscale.models.sft import IGNORE_INDEX, encode_example, pad_batch
from inferscale.tracking.offline import find_runs, read_run
from inferscale.tracking.wandb_runs import TrackingSettings, wandb_env


def test_loss_is_taken_on_solution_tokens_only(tmp_path):
    config = parse_config(tiny_config(tmp_path), base_dir=REPO / "configs")
    prepare_data(config.data, 0, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / TOKENIZER_DIR)
    fmt = step_format(config.data)
    prompt, solution = fmt.prompt("3 + 4"), fmt.solution(["3 + 4 = 7", "The answer is: 7"])
    example = encode_example(tokenizer, prompt, solution, max_length=64)
    n_prompt = len(tokenizer(prompt)["input_ids"])
    assert example["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert example["labels"][n_prompt:] == example["input_ids"][n_prompt:]
    assert example["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example["input_ids"][n_prompt:-1]) == solution

    batch = pad_batch([example, encode_example(tokenizer, prompt, "Step 1: 7 ки\n", 64)], 0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    padded = batch["attention_mask"][1] == 0
    assert (batch["labels"][1][padded] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1][padded] == 0).all()


@pytest.mark.slow
def test_two_rank_deepspeed_sft_trains_and_logs_to_wandb(tmp_path):
    overrides = {
        "sft.num_processes": 2,
        "sft.threads_per_process": 1,
        "sft.max_steps": 12,
        "sft.logging_steps": 3,
        "sft.learning_rate": 3e-3,
        "sft.warmup_steps": 2,
    }
    config = parse_config(tiny_config(tmp_path, **overrides), base_dir=REPO / "configs")
    prepare_data(config.data, 0, tmp_path / "data")
    policy = config.policies[0]
    out = tmp_path / "model"
    spec = sft_spec(
        policy,
        config.sft,
        config.data.format.model_dump(),
        str(tmp_path / "data" / TOKENIZER_DIR),
        tmp_path / "data" / TRAIN_FILE,
        out,
        seed=0,
        report_to=["wandb"],
    )
    tracking = TrackingSettings(project="inferscale", group="sft-test")
    env = wandb_env(tracking, "sft", "sft-A", tmp_path)

    buffers_before = set(SHM.glob("deepspeed_allreduce_buffer_*"))
    # As an interrupted run leaves it: without its removal both ranks would wait forever.
    lock = op_build_lock()
    clear_stale_build_lock(lock)
    assert not lock.exists(), f"{lock} is held: another process is building DeepSpeed's op"
    old_file(lock)
    try:
        summary = run_sft(spec, config.sft, env, tmp_path / "train.log")
    finally:
        lock.unlink(missing_ok=True)
    first = (tmp_path / "train.log").read_text().splitlines()[0]
    assert first.startswith(f"removed {lock}, left by an interrupted run")
    # DeepSpeed's CPU all-reduce leaves one shared buffer per rank; the launcher removes them.
    assert set(SHM.glob("deepspeed_allreduce_buffer_*")) <= buffers_before

    assert summary["engine"] == "DeepSpeedEngine"
    assert summary["world_size"] == 2 and summary["zero_stage"] == 2
    assert summary["steps"] == 12
    losses = [row["loss"] for row in summary["loss_history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())

    (run_dir,) = find_runs(tmp_path / "wandb")
    run = read_run(run_dir)
    assert (run.group, run.job_type, run.name) == ("sft-test", "sft", "sft-A")
    logged = [row["train/loss"] for row in run.history if "train/loss" in row]
    assert logged == pytest.approx(losses, rel=1e-4)
    assert run.summary["train/global_step"] == 12


def test_only_the_runs_own_shared_buffers_are_removed(tmp_path):
    names = [
        "deepspeed_allreduce_buffer_0_127.0.0.1_29533_0",
        "deepspeed_allreduce_buffer_0_127.0.0.1_29533_1",
        "deepspeed_allreduce_buffer_0_127.0.0.1_295330_0",
        "deepspeed_allreduce_buffer_0_127.0.0.1_1295_0",
        "psm_29533",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    remove_shared_buffers(29533, shm=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])
    remove_shared_buffers(29533, shm=tmp_path)  # nothing left to remove is fine


@pytest.mark.parametrize("ends", ["finished", "failed"])
def test_a_rank_that_ends_on_its_own_removes_its_runs_shared_buffers(ends):
    """Were the run's owner killed in a rank's last second, the rank would exit before its
    watch noticed, and no one else would remove the buffers."""
    port = free_port()
    buffers = [SHM / f"deepspeed_allreduce_buffer_{i}_127.0.0.1_{port}_0" for i in range(2)]
    other = SHM / f"deepspeed_allreduce_buffer_0_127.0.0.1_{port}0_0"
    for path in (*buffers, other):
        path.write_bytes(b"x")
    rank = "from inferscale.models.processes import leave_with_owner\nleave_with_owner()\n" + (
        "raise SystemExit(3)\n" if ends == "failed" else ""
    )
    env = {**os.environ, OWNER_ENV: owner_token(), "MASTER_PORT": str(port)}
    try:
        done = subprocess.run([sys.executable, "-c", rank], env=env, timeout=120)
        assert done.returncode == (3 if ends == "failed" else 0)
        assert not any(path.exists() for path in buffers)
        assert other.exists()  # another run's
    finally:
        for path in (*buffers, other):
            path.unlink(missing_ok=True)


def old_file(path: Path, age_s: float = 60.0) -> Path:
    path.touch()
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_build_lock_no_process_holds_is_removed(tmp_path):
    lock = old_file(tmp_path / "lock")
    assert clear_stale_build_lock(lock)
    assert not lock.exists()
    assert not clear_stale_build_lock(lock)  # none left is fine


def test_a_build_lock_a_process_holds_is_kept_until_released(tmp_path):
    lock = old_file(tmp_path / "lock")
    fd = os.open(lock, os.O_RDONLY)  # torch's builder keeps its lock open while it works
    try:
        assert not clear_stale_build_lock(lock)
        assert lock.exists()
    finally:
        os.close(fd)
    assert clear_stale_build_lock(lock)


def test_a_build_lock_just_made_is_kept(tmp_path):
    lock = old_file(tmp_path / "lock", age_s=0.0)
    assert not clear_stale_build_lock(lock)
    assert clear_stale_build_lock(lock, now=time.time() + 60)


def test_a_failing_launch_raises_with_the_log_tail(tmp_path):
    config = parse_config(tiny_config(tmp_path), base_dir=REPO / "configs")
    spec = sft_spec(
        config.policies[0],
        config.sft,
        config.data.format.model_dump(),
        str(tmp_path / "no-tokenizer"),
        tmp_path / "missing.jsonl",
        tmp_path / "model",
        seed=0,
        report_to=[],
    )
    with pytest.raises(TrainingFailed, match="full log: .*train.log"):
        run_sft(spec, config.sft, {}, tmp_path / "train.log")
    assert Path(tmp_path / "train.log").read_text()


@pytest.mark.slow
def test_a_diverged_training_fails_and_saves_no_model(tmp_path):
    config = parse_config(
        tiny_config(tmp_path, **{"sft.max_steps": 4, "sft.logging_steps": 1}),
        base_dir=REPO / "configs",
    )
    prepare_data(config.data, 0, tmp_path / "data")
    spec = sft_spec(
        config.policies[0],
        config.sft,
        config.data.format.model_dump(),
        str(tmp_path / "data" / TOKENIZER_DIR),
        tmp_path / "data" / TRAIN_FILE,
        tmp_path / "model",
        seed=0,
        report_to=[],
    )
    spec["weight_decay"] = float("inf")  # the config refuses it; the trainer must too
    said = r"exited with code 1: TrainingDiverged: training diverged at step \d+ \(grad_norm inf\)"
    with pytest.raises(TrainingFailed, match=said):
        run_sft(spec, config.sft, {}, tmp_path / "train.log")
    assert not (tmp_path / "model" / "model.safetensors").exists()
    assert not (tmp_path / "model" / "train_summary.json").exists()


@pytest.mark.parametrize(
    "logs",
    [{"loss": float("nan")}, {"loss": 0.0, "grad_norm": float("inf")}, {"train_loss": -math.inf}],
)
def test_a_non_finite_loss_or_gradient_norm_stops_training(logs):
    with pytest.raises(TrainingDiverged, match="training diverged at step 7"):
        check_finite(logs, 7)


def test_finite_logs_and_other_figures_pass():
    check_finite({"loss": 0.0, "grad_norm": 1e30, "learning_rate": float("nan"), "epoch": 1}, 3)
