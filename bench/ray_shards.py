"""Sharded evaluation on a local Ray: the default's S policy evaluated with the pool (majority
vote over its 32 samples) and REBASE (widths 4, 8, 16 on the searched questions), once on 1
shard of 1 CPU and once on `--shards` shards of 1 CPU each, alternated `--repeats` times in
one run, so that both sides see the same machine load.

Each side is `inferscale run --only evaluate` on a copy of the default's settings whose policy
and PRM are the default's finished checkpoints, given as checkpoints (so nothing trains), with
`generation.threads: 1` (one CPU per shard). Its time is the evaluate stage's own (from its
metrics: Ray's start, the shards' model loading, generation, the merge and the scoring), and
the process's wall time beside it. The records of the sides are compared byte for byte (their
PRM scores may differ in the last bit under the CPU pins: see the README).

Needs the default's checkpoints: run `make run` first, or name them with --policy-dir and
--prm-dir. Writes bench/results/ray_shards.json.

    .venv/bin/python bench/ray_shards.py [--shards 2] [--repeats 2]
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
        sys.exit(f"error: inferscale run {' '.join(args)} failed:\n{done.stdout[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--policy-dir", help="S's checkpoint (default: the finished default's)")
    parser.add_argument("--prm-dir", help="the PRM's checkpoint (default: the default's)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_shards.json"))
    args = parser.parse_args()

    from inferscale.numerics import cpu_model

    policy_dir, prm_dir = args.policy_dir, args.prm_dir
    if policy_dir is None or prm_dir is None:
        from experiment import finished_experiment

        finished = finished_experiment(args.config, "S")
        policy_dir = policy_dir or str(finished.policy_dir)
        prm_dir = prm_dir or str(finished.prm_dir)
    default = yaml.safe_load(Path(args.config).read_text())
    workdir = Path(tempfile.mkdtemp(prefix="ray-shards-"))
    try:
        config_path = workdir / "experiment.yaml"
        config = bench_config(
            default, str(Path(policy_dir).resolve()), str(Path(prm_dir).resolve()), workdir / "runs"
        )
        config_path.write_text(yaml.safe_dump(config))
        run(config_path, workdir, "--only", "prepare_data")
        evaluate_root = workdir / "runs" / "ray-shards" / "artifacts" / "evaluate"
        rows, records = [], {}
        for repeat in range(args.repeats):
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
                (folder,) = [p for p in evaluate_root.iterdir() if p.is_dir()]
                metrics = json.loads((folder / "metrics.json").read_text())
                stores = {p.name: p.read_bytes() for p in sorted(folder.glob("*.jsonl"))}
                records.setdefault(shards, stores)
                row = {
                    "repeat": repeat,
                    "shards": shards,
                    "evaluate_seconds": round(metrics["seconds"], 2),
                    "wall_seconds": round(wall, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def median(shards: int, field: str) -> float:
        return statistics.median(r[field] for r in rows if r["shards"] == shards)

    speedups = [
        one["evaluate_seconds"] / many["evaluate_seconds"]
        for one, many in zip(
            [r for r in rows if r["shards"] == 1],
            [r for r in rows if r["shards"] == args.shards],
            strict=True,
        )
    ]
    same = {name: records[1][name] == records[args.shards].get(name) for name in records[1]}
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
        "median_evaluate_seconds": {
            "1": median(1, "evaluate_seconds"),
            str(args.shards): median(args.shards, "evaluate_seconds"),
        },
        "speedups": [round(s, 3) for s in speedups],
        "median_speedup": round(statistics.median(speedups), 3),
        "stores_byte_identical": same,
    }
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "median_evaluate_seconds",
                    "speedups",
                    "median_speedup",
                    "stores_byte_identical",
                )
            }
        )
    )
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
