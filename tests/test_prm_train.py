"""PRM training under the real `deepspeed` launcher with two ranks on CPU, logging to W&B
offline, then scored on held-out solutions by rank 0."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from pipeline_config import REPO, tiny_config
from prm_data import BAD_TOKEN, FMT, GOOD_TOKEN, labelled_set, save_tiny_model, tokenizer_for

import inferscale
from inferscale.config import parse_config
from inferscale.data.step_labels import write_step_labels
from inferscale.models.launch import TrainingFailed, run_prm_training
from inferscale.models.prm_scorer import PRMScorer
from inferscale.models.prm_train import complete_spec
from inferscale.tracking.offline import find_runs, read_run
from inferscale.tracking.wandb_runs import TrackingSettings, wandb_env


def prm_spec(tmp_path, **overrides) -> dict:
    train, held_out = labelled_set(48, seed=1), labelled_set(8, seed=2, prefix="h")
    write_step_labels(tmp_path / "labels" / "train.jsonl", train)
    write_step_labels(tmp_path / "labels" / "held_out.jsonl", held_out)
    init = save_tiny_model(tmp_path / "init", tokenizer_for(train + held_out))
    return {
        "init_model": str(init),
        "train_file": str(tmp_path / "labels" / "train.jsonl"),
        "eval_file": str(tmp_path / "labels" / "held_out.jsonl"),
        "output_dir": str(tmp_path / "prm"),
        "deepspeed_config": str(REPO / "configs" / "deepspeed" / "zero2.json"),
        "format": asdict(FMT),
        "good_token": GOOD_TOKEN,
        "bad_token": BAD_TOKEN,
        "max_length": 64,
        "max_steps": 12,
        "per_device_batch_size": 8,
        "learning_rate": 3e-3,
        "warmup_steps": 2,
        "logging_steps": 3,
        "threads_per_rank": 1,
        "report_to": ["wandb"],
        "run_name": "prm-A",
        **overrides,
    }


def launch_settings(tmp_path, processes: int):
    overrides = {"sft.num_processes": processes, "sft.threads_per_process": 1}
    return parse_config(tiny_config(tmp_path, **overrides), base_dir=REPO / "configs").sft


@pytest.mark.slow
def test_two_rank_deepspeed_prm_training_evaluates_and_logs_to_wandb(tmp_path):
    spec = prm_spec(tmp_path)
    tracking = TrackingSettings(project="inferscale", group="prm-test")
    env = wandb_env(tracking, "train_prm", "prm-A", tmp_path)

    summary = run_prm_training(spec, launch_settings(tmp_path, 2), env, tmp_path / "prm.log")

    assert summary["engine"] == "DeepSpeedEngine"
    assert summary["world_size"] == 2 and summary["zero_stage"] == 2
    assert summary["steps"] == 12 and summary["examples"] == 96
    losses = [row["loss"] for row in summary["loss_history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    metrics = summary["eval"]
    assert metrics["solutions"] == 16 and metrics["steps"] == 64 and metrics["bon_questions"] == 8
    assert 0.0 <= metrics["step_auc"] <= 1.0
    assert metrics["bon_random_accuracy"] == 0.5
    # Rank 0 evaluated the saved model directory, which the scorer reads back the same way.
    out = tmp_path / "prm"
    assert json.loads((out / "prm.json").read_text())["good_token"] == GOOD_TOKEN
    scorer = PRMScorer.from_pretrained(out, threads=1)
    assert scorer.candidates == tuple(
        scorer.tokenizer.convert_tokens_to_ids([GOOD_TOKEN, BAD_TOKEN])
    )

    (run_dir,) = find_runs(tmp_path / "wandb")
    run = read_run(run_dir)
    assert (run.group, run.job_type, run.name) == ("prm-test", "train_prm", "prm-A")
    logged = [row["train/loss"] for row in run.history if "train/loss" in row]
    assert logged == pytest.approx(losses, rel=1e-4)
    assert run.summary["eval/step_auc"] == pytest.approx(metrics["step_auc"])
    assert run.summary["eval/bon_last_accuracy"] == pytest.approx(metrics["bon_last_accuracy"])
    assert run.exit_code == 0


def test_a_failing_prm_launch_raises_with_the_log_tail(tmp_path):
    spec = prm_spec(tmp_path, train_file=str(tmp_path / "missing.jsonl"), report_to=[])
    with pytest.raises(TrainingFailed, match=r"PRM training exited .* full log: .*prm.log"):
        run_prm_training(spec, launch_settings(tmp_path, 1), {}, tmp_path / "prm.log")
    log = (tmp_path / "prm.log").read_text()
    assert "missing.jsonl" in log
    # The ranks ran the package these tests import (PYTHONPATH reaches them), not another copy.
    assert f'File "{Path(inferscale.__file__).parent / "models" / "prm_train.py"}"' in log


def test_the_spec_names_missing_and_unknown_keys():
    with pytest.raises(ValueError, match=r"missing keys \['train_file'\].*\['lr'\]"):
        complete_spec({"init_model": "m", "output_dir": "o", "deepspeed_config": "d", "lr": 1})
    with pytest.raises(ValueError, match="label must be"):
        complete_spec(
            {"init_model": "m", "train_file": "t", "output_dir": "o", "deepspeed_config": "d",
             "label": "fuzzy"}
        )  # fmt: skip
