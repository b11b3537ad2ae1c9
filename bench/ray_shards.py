"""Sharded evaluation on a local Ray: the default's S policy evaluated with the pool (majority
vote over its 32 samples) and REBASE (widths 4, 8, 16 on the searched questions) on 1 shard of
1 CPU and on `--shards` shards of 1 CPU each, alternated in one run so that both sides see the
same machine load.

Each side evaluates a copy of the default's settings whose policy and PRM are the default's
finished checkpoints, given as checkpoints (so nothing trains), with `generation.threads: 1`
(one CPU per shard), and is timed by the evaluate stage's own seconds (its metrics). Two ways:

- warm (`--repeats` pairs): the flow run in this process with `--only evaluate` semantics while
  one Ray stays up, as in a whole run, where Ray starts with the run and its workers have
  imported the shards' code by the time a stage deals out questions; a first pair warms the
  workers and is not counted;
- cold (one pair): `inferscale run --only evaluate` in a process of its own, so each side
  starts Ray and its workers import torch, transformers and Prefect within the stage.

For each, the shards' own span (first shard start to last shard end, from the stage's
`shard_attempts.jsonl`) is kept beside the stage's seconds. The sides' records are compared
byte for byte (under the CPU pins a PRM score may differ in its last bit: see the README).

Needs the default's checkpoints: run `make run` first, or name them with --policy-dir and
--prm-dir. Writes bench/results/ray_shards.json.

    .venv/bin/python bench/ray_shards.py [--shards 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def bench_config(default: dict, policy_dir: str, prm_dir: str, out: Path) -> dict:
    """The default's data, generation and evaluation settings, pool and REBASE only, with its
    S policy and PRM given as checkpoints."""
    config = {k: default[k] for k in ("name", "seed", "data", "generation")}
    config["name"] = "ray-shards"
    config["output_dir"] = str(out)
    config["generation"] = {**default["generation"], "threads": 1}
    config["policies"] = [{"name": "S", "checkpoint": policy_dir}]
    config["prm"] = {"checkpoint": prm_dir, "format": "inferscale"}
    evaluation = dict(default["evaluation"])
    evaluation["strategies"] = ["majority_vote", "rebase"]
    evaluation["search"] = {
        **evaluation["search"],
        "budgets": {"rebase": evaluation["search"]["budgets"]["rebase"]},
    }
    config["evaluation"] = evaluation
    config["tracking"] = {"mode": "disabled"}
    config["execution"] = {"engine": "ray", "ray": {"shards": 1, "num_cpus_per_shard": 1}}
    return config


def run(config_path: Path, workdir: Path, *args: str) -> float:
    env = {**os.environ, "PREFECT_HOME": str(workdir / "prefect")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "inferscale.cli", "run", str(config_path), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(
            f"error: inferscale run {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return time.perf_counter() - start


def warm_pairs(config: dict, config_path: Path, evaluate_root: Path, args, measured) -> None:
    """Evaluate on 1 shard and on `args.shards`, in turn, through the flow in this process,
    with one Ray up throughout (a first, uncounted pair warms its workers)."""
    from inferscale.config import load_config
    from inferscale.flows.parameters import flow_parameters
    from inferscale.flows.pipeline import experiment_flow
    from inferscale.ray_engine import hold_ray

    loaded = {k: load_config(config_path, [f"execution.ray.shards={k}"]) for k in (1, args.shards)}
    with hold_ray(loaded[args.shards]):
        for repeat in range(-1, args.repeats):
            for shards in (1, args.shards):
                shutil.rmtree(evaluate_root, ignore_errors=True)
                start = time.perf_counter()
                experiment_flow(
                    **flow_parameters(loaded[shards], str(config_path), only="evaluate")
                )
                measured("warm", repeat, shards, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policy-dir", help="S's checkpoint (default: the finished default's)")
    parser.add_argument("--prm-dir", help="the PRM's checkpoint (default: the default's)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_shards.json"))
    args = parser.parse_args()

    from inferscale.numerics import cpu_model
    from inferscale.shards import HISTORY_FILE, read_attempts

    policy_dir, prm_dir = args.policy_dir, args.prm_dir
    if policy_dir is None or prm_dir is None:
        from experiment import finished_experiment

        finished = finished_experiment(args.config, "S")
        policy_dir = policy_dir or str(finished.policy_dir)
        prm_dir = prm_dir or str(finished.prm_dir)
    default = yaml.safe_load(Path(args.config).read_text())
    workdir = Path(tempfile.mkdtemp(prefix="ray-shards-"))
    os.environ["PREFECT_HOME"] = str(workdir / "prefect")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    config = bench_config(
        default,
        str(Path(policy_dir).resolve()),
        str(Path(prm_dir).resolve()),
        workdir / "runs",
    )
    config_path = workdir / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config))
    evaluate_root = workdir / "runs" / "ray-shards" / "artifacts" / "evaluate"
    rows, records = [], {}

    def measured(mode: str, repeat: int, shards: int, wall: float) -> None:
        (folder,) = [p for p in evaluate_root.iterdir() if p.is_dir()]
        metrics = json.loads((folder / "metrics.json").read_text())
        events = read_attempts(folder / HISTORY_FILE)
        records.setdefault(shards, {p.name: p.read_bytes() for p in folder.glob("*.jsonl")})
        row = {
            "mode": mode,
            "repeat": repeat,
            "shards": shards,
            "evaluate_seconds": round(metrics["seconds"], 2),
            "shards_seconds": round(
                max(e["time"] for e in events) - min(e["time"] for e in events), 2
            ),
            "wall_seconds": round(wall, 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    try:
        run(config_path, workdir, "--only", "prepare_data")
        for shards in (1, args.shards):
            shutil.rmtree(evaluate_root, ignore_errors=True)
            wall = run(
                config_path,
                workdir,
                "--only",
                "evaluate",
                "--set",
                f"execution.ray.shards={shards}",
            )
            measured("cold", 0, shards, wall)
        warm_pairs(config, config_path, evaluate_root, args, measured)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    same = {
        name: records[1][name] == records[args.shards].get(name)
        for name in records[1]
        if name != HISTORY_FILE
    }
    result = {
        "benchmark": "ray_shards",
        "config": str(Path(args.config).resolve().relative_to(REPO)),
        "policy": "S",
        "strategies": config["evaluation"]["strategies"],
        "pool": config["evaluation"]["budgets"][-1],
        "rebase_widths": config["evaluation"]["search"]["budgets"]["rebase"],
        "questions": default["data"]["arithmetic"]["test_size"],
        "searched_questions": config["evaluation"]["search"]["limit"],
        "shards": args.shards,
        "num_cpus_per_shard": 1,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "rows": rows,
        **summary(rows, args.shards),
        "stores_byte_identical": same,
    }
    print(json.dumps({k: result[k] for k in ("median_evaluate_seconds", "median_speedup")}))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def summary(rows: list[dict], shards: int) -> dict:
    """Per mode: the median seconds of each side, and the speed-up of each counted pair (the
    stage's seconds and the shards' span), with their medians."""
    out: dict = {"median_evaluate_seconds": {}, "speedups": {}, "median_speedup": {}}
    for mode in ("warm", "cold"):
        counted = [r for r in rows if r["mode"] == mode and r["repeat"] >= 0]
        one = [r for r in counted if r["shards"] == 1]
        many = [r for r in counted if r["shards"] == shards]
        out["median_evaluate_seconds"][mode] = {
            str(k): statistics.median(r["evaluate_seconds"] for r in side)
            for k, side in ((1, one), (shards, many))
        }
        ratios = {
            field: [round(a[field] / b[field], 3) for a, b in zip(one, many, strict=True)]
            for field in ("evaluate_seconds", "shards_seconds")
        }
        out["speedups"][mode] = ratios
        out["median_speedup"][mode] = {f: statistics.median(v) for f, v in ratios.items()}
    return out


if __name__ == "__main__":
    main()
