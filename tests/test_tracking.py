"""Real offline W&B runs in tmp_path, read back from their transaction logs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import wandb
from matplotlib.figure import Figure

from inferscale.tracking.offline import OfflineRun, find_runs, read_run
from inferscale.tracking.wandb_runs import (
    TrackingSettings,
    finish_run,
    log_image,
    log_table,
    start_run,
    wandb_env,
)

SETTINGS = TrackingSettings(project="inferscale-test", group="experiment-1")
TRAIN_STEPS = 4
TRAIN_SCRIPT = f"""
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

torch.manual_seed(0)
config = LlamaConfig(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=32,
)
tokens = torch.randint(0, config.vocab_size, (8, 16))
args = TrainingArguments(
    output_dir=sys.argv[1],
    max_steps={TRAIN_STEPS},
    per_device_train_batch_size=2,
    logging_steps=1,
    report_to=["wandb"],
    save_strategy="no",
    use_cpu=True,
    disable_tqdm=True,
)
dataset = [{{"input_ids": row, "labels": row}} for row in tokens]
Trainer(model=LlamaForCausalLM(config), args=args, train_dataset=dataset).train()
"""


@pytest.fixture(autouse=True)
def isolated_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for key in list(os.environ):
        if key.startswith("WANDB_"):
            monkeypatch.delenv(key)
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home" / key.lower()))
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    # Drop wandb's per-process singleton so no settings leak into the next test.
    wandb.teardown()


def log_example_run(tmp_path: Path) -> OfflineRun:
    image = tmp_path / "curve.png"
    figure = Figure()
    figure.add_subplot().plot([1, 2, 4], [0.5, 0.625, 0.75])
    figure.savefig(image)

    config = {"budget": 8, "policy": {"name": "sft-a", "lr": 1e-5}}
    run = start_run(SETTINGS, stage="evaluate", name="evaluate-sft-a", config=config, dir=tmp_path)
    for step, accuracy in enumerate([0.5, 0.625, 0.75]):
        run.log({"accuracy": accuracy, "tokens": 100 * step})
    run.summary["best_accuracy"] = 0.75
    log_table(run, "results", pd.DataFrame({"budget": [1, 2], "accuracy": [0.25, 0.5]}))
    log_image(run, "curve", image)
    finish_run(run)

    [run_dir] = find_runs(tmp_path)
    return read_run(run_dir)


def test_offline_run_reads_back_exactly(tmp_path: Path):
    offline = log_example_run(tmp_path)

    assert (offline.project, offline.group, offline.job_type, offline.name) == (
        "inferscale-test",
        "experiment-1",
        "evaluate",
        "evaluate-sft-a",
    )
    assert offline.config == {"budget": 8, "policy": {"name": "sft-a", "lr": 1e-5}}
    assert offline.exit_code == 0
    assert find_runs(tmp_path / "wandb") == [offline.run_dir]

    scalar_keys = ("_step", "accuracy", "tokens")
    scalars = [{key: row[key] for key in scalar_keys} for row in offline.history[:3]]
    assert scalars == [
        {"_step": 0, "accuracy": 0.5, "tokens": 0},
        {"_step": 1, "accuracy": 0.625, "tokens": 100},
        {"_step": 2, "accuracy": 0.75, "tokens": 200},
    ]
    table_row, image_row = offline.history[3:]
    assert table_row["_step"] == 3 and image_row["_step"] == 4
    assert table_row["results"]["_type"] == "table-file"
    assert image_row["curve"]["_type"] == "image-file"

    assert offline.summary["best_accuracy"] == 0.75
    assert offline.summary["accuracy"] == 0.75
    assert offline.summary["_step"] == 4

    files = offline.run_dir / "files"
    assert offline.files == [table_row["results"]["path"], image_row["curve"]["path"]]
    assert json.loads((files / table_row["results"]["path"]).read_text()) == {
        "columns": ["budget", "accuracy"],
        "data": [[1, 0.25], [2, 0.5]],
    }
    image_bytes = (files / image_row["curve"]["path"]).read_bytes()
    assert image_bytes == (tmp_path / "curve.png").read_bytes()
    assert offline.artifacts == [f"run-{offline.run_id}-results"]


def test_reader_agrees_with_wandb_core(tmp_path: Path):
    offline = log_example_run(tmp_path)

    # `wandb leet inspect` reads the same log with wandb-core's own Go reader.
    inspected = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", offline.run_dir],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    core_view = json.loads(inspected.stdout)
    assert core_view["config"] == offline.config
    assert core_view["summary"] == offline.summary
    assert core_view["step"] == offline.history[-1]["_step"]


def test_wandb_env_routes_hf_trainer_run_into_group(tmp_path: Path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    env = {**os.environ, **wandb_env(SETTINGS, stage="sft", name="sft-policy-a", dir=tmp_path)}
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "checkpoints")],
        env=env,
        check=True,
        timeout=120,
    )

    [run_dir] = find_runs(tmp_path)
    offline = read_run(run_dir)
    assert (offline.project, offline.group, offline.job_type, offline.name) == (
        "inferscale-test",
        "experiment-1",
        "sft",
        "sft-policy-a",
    )
    loss_rows = [row for row in offline.history if "train/loss" in row]
    assert [row["train/global_step"] for row in loss_rows] == list(range(1, TRAIN_STEPS + 1))
    assert all(row["train/loss"] > 0 for row in loss_rows)
    assert offline.config["logging_steps"] == 1
    assert offline.config["model/num_parameters"] > 0
    assert "train_loss" in offline.summary
    assert offline.artifacts == []  # WANDB_LOG_MODEL=false: no model upload
    assert offline.exit_code == 0
