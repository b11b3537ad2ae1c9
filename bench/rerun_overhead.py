"""How long a second `inferscale run` of a finished experiment takes, against the first.

Runs the experiment twice from an empty output directory, each time as the user would
(`inferscale run CONFIG`, a fresh process), and times an empty Prefect flow in a fresh process
the same way: the fixed start-up (imports, temporary server) that every run pays. Writes
bench/results/rerun_overhead.json, with when each stage of the first run finished and the run's
summary, the figures the README quotes.

    .venv/bin/python bench/rerun_overhead.py [--config configs/default.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from inferscale.artifacts import COMPLETE_MARKER
from inferscale.config import load_config
from inferscale.numerics import MODE_ENV, PIN_NAMES, cpu_model
from inferscale.report.files import SUMMARY_FILE
from inferscale.stages import plan

REPO = Path(__file__).resolve().parents[1]
NOOP_FLOW = "from prefect import flow\n@flow\ndef noop():\n    return 1\nnoop()\n"


def shown_path(path: Path) -> str:
    """The path relative to the repository when it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def timed(cmd: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=True, cwd=REPO)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "rerun_overhead.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="inferscale-bench-"))
    config = yaml.safe_load(Path(args.config).read_text())
    config["output_dir"] = str(work / "runs")
    deepspeed = Path(config.get("sft", {}).get("deepspeed", "deepspeed/zero2.json"))
    if not deepspeed.is_absolute():
        # Absolute: the copy of the config lives in the temporary directory, not beside it.
        beside = Path(args.config).resolve().parent
        config.setdefault("sft", {})["deepspeed"] = str(beside / deepspeed)
    config_path = work / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    cli = [sys.executable, "-m", "inferscale.cli", "run", str(config_path)]

    started = time.time()
    first = timed(cli, env, work / "first.log")
    # Read before the second run, which must leave every stage as it was.
    stages = plan(load_config(config_path))
    finished_at = {
        f"{a.stage}/{a.path.name}": round((a.path / COMPLETE_MARKER).stat().st_mtime - started, 1)
        for a in stages.all()
    }
    second = timed(cli, env, work / "second.log")
    startup = min(
        timed([sys.executable, "-c", NOOP_FLOW], env, work / "noop.log") for _ in range(2)
    )
    result = {
        "config": shown_path(Path(args.config)),
        "first_run_s": round(first, 1),
        "second_run_s": round(second, 1),
        "prefect_startup_s": round(startup, 1),
        "second_over_first": round(second / first, 4),
        "second_over_first_excluding_startup": round(
            max(second - startup, 0.0) / max(first - startup, 1e-9), 4
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "python": platform.python_version(),
            # The kernel pins the runs inherited (see inferscale.numerics).
            "cpu_numerics": {name: env.get(name) for name in (MODE_ENV, *PIN_NAMES)},
        },
        # Seconds from the first run's start to each stage's completion marker.
        "stage_finished_at_s": finished_at,
        "summary": json.loads((stages.analyze.path / SUMMARY_FILE).read_text()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"logs and runs: {work}")


if __name__ == "__main__":
    main()
