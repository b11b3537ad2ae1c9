"""How long `inferscale run CONFIG --refresh analyze` takes on a finished experiment: the
analysis stage alone (laws with their bootstrap, voting limits, the compute-optimal tables,
every figure, the HTML report and the W&B run), and the whole command as a user runs it (a
fresh process, Prefect's start-up included). The median of `--repeats` runs. Writes
bench/results/analyze_refresh.json, the figures the README quotes.

    .venv/bin/python bench/analyze_refresh.py [--config configs/default.yaml] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from inferscale.artifacts import COMPLETE_MARKER
from inferscale.config import load_config
from inferscale.stages import plan

REPO = Path(__file__).resolve().parents[1]


def shown_path(path: Path) -> str:
    """The path relative to the repository when it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "analyze_refresh.json"))
    args = parser.parse_args()

    stages = plan(load_config(args.config))
    unfinished = [str(a.path) for a in stages.evaluate.values() if not a.complete]
    if unfinished:
        sys.exit(
            f"error: the experiment's evaluations are not finished ({unfinished}); "
            f"run `inferscale run {args.config}` first"
        )
    cli = [sys.executable, "-m", "inferscale.cli", "run", args.config, "--refresh", "analyze"]
    commands, stage = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run(cli, cwd=REPO, check=True, capture_output=True, env=os.environ)
        commands.append(time.perf_counter() - start)
        marker = json.loads((stages.analyze.path / COMPLETE_MARKER).read_text())
        stage.append(marker["seconds"])
    result = {
        "config": shown_path(Path(args.config)),
        "repeats": args.repeats,
        "analyze_stage_s": round(statistics.median(stage), 1),
        "analyze_stage_runs_s": [round(s, 1) for s in stage],
        "command_s": round(statistics.median(commands), 1),
        "command_runs_s": [round(s, 1) for s in commands],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
