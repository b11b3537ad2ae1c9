"""Start SFT under the real `deepspeed` launcher, one process per rank, and check its result."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from inferscale.config import PolicyConfig, SFTConfig


class TrainingFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sft_spec(
    policy: PolicyConfig,
    sft: SFTConfig,
    fmt: dict,
    tokenizer_dir: str,
    train_file: Path,
    output_dir: Path,
    seed: int,
    report_to: list[str],
) -> dict:
    model = (
        {"hub_id": policy.hub_id}
        if policy.hub_id
        else {
            "hidden_size": policy.hidden_size,
            "num_layers": policy.num_layers,
            "num_heads": policy.num_heads,
            "intermediate_size": policy.ffn_size,
        }
    )
    return {
        "model": model,
        "tokenizer_dir": tokenizer_dir,
        "train_file": str(train_file),
        "output_dir": str(output_dir),
        "format": fmt,
        "deepspeed_config": sft.deepspeed,
        "max_length": sft.max_length,
        "seed": seed,
        "max_steps": sft.max_steps,
        "per_device_batch_size": sft.per_device_batch_size,
        "gradient_accumulation_steps": sft.gradient_accumulation_steps,
        "learning_rate": policy.learning_rate or sft.learning_rate,
        "warmup_steps": sft.warmup_steps,
        "lr_scheduler": sft.lr_scheduler,
        "weight_decay": sft.weight_decay,
        "bf16": sft.bf16,
        "use_cpu": sft.use_cpu,
        "threads_per_rank": sft.threads_per_process,
        "logging_steps": sft.logging_steps,
        "report_to": report_to,
        "run_name": f"sft-{policy.name}",
    }


def launcher_command(sft: SFTConfig, spec_path: Path) -> list[str]:
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which(
        "deepspeed"
    )
    if launcher is None:
        raise TrainingFailed("the `deepspeed` launcher is not on PATH; install the package deps")
    cmd = [launcher, "--num_gpus", str(sft.num_processes), "--master_port", str(free_port())]
    if sft.num_nodes > 1:
        cmd += ["--num_nodes", str(sft.num_nodes), "--hostfile", str(sft.hostfile)]
    return cmd + ["--module", "inferscale.models.sft", "--spec", str(spec_path)]


def run_sft(spec: dict, sft: SFTConfig, env: dict[str, str], log_path: Path) -> dict:
    """Run the launcher; return the summary rank 0 wrote, or raise with the log's tail."""
    output_dir = Path(spec["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    spec_path = output_dir / "sft_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    full_env = {**os.environ, **env}
    if sft.use_cpu:
        full_env["DS_ACCELERATOR"] = "cpu"
    full_env.setdefault("OMP_NUM_THREADS", str(sft.threads_per_process))
    with log_path.open("w") as log:
        proc = subprocess.run(
            launcher_command(sft, spec_path), env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    summary_path = output_dir / "train_summary.json"
    if proc.returncode != 0 or not summary_path.is_file():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise TrainingFailed(
            f"SFT exited with code {proc.returncode}; full log: {log_path}\n"
            f"--- last lines ---\n{tail}"
        )
    return json.loads(summary_path.read_text())
