"""Stop the tests' tiny experiment at random points of every stage and resume it.

One uninterrupted run gives the reference results and each stage's duration. Then each trial
takes one stage (the stages in turn), starts the experiment with every other stage's artifact
already finished (copied from the reference: keys do not depend on the output folder), stops it
at a random point of that stage with SIGKILL to the CLI's process, or SIGTERM to the process or
to its whole process group as Slurm and Kubernetes send it, and runs it again to the end (a
point the stage had already passed, and with it the run, is drawn again, earlier). The
stage stopped is the one redone; the others are found finished, as they would be had the same
stage been stopped in a whole run (their keys do not depend on its files). For each trial:

- whether every result file is byte-identical to the reference's (models, step labels, every
  evaluation store and score file, the analysis tables and summary; timings left out);
- how many evaluation questions that were finished when the run stopped were generated again
  (the resumed run's own count of what each store still lacked, against what the store held);
- whether a store written before the stop is still the start of the store after the resume;
- any process of the run, or DeepSpeed /dev/shm buffer, left once the run is gone;
- for SIGTERM, how long the CLI took to exit.

Writes bench/results/fault_injection.json, the figures the README quotes.

    .venv/bin/python bench/fault_injection.py [--kills 24] [--sigterms 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pipeline_config import (  # noqa: E402
    run_processes,
    shared_buffers_left,
    start_run,
    tiny_config,
    write_config,
)

from inferscale.artifacts import COMPLETE_MARKER, STARTED_MARKER  # noqa: E402
from inferscale.config import load_config  # noqa: E402
from inferscale.numerics import cpu_model  # noqa: E402
from inferscale.results import ResultStore  # noqa: E402
from inferscale.stages import Plan, plan  # noqa: E402

RUN_TIMEOUT_S = 900
# A stop drawn after the stage (and with it the run) had already finished, because the stage
# ran faster than in the reference, is drawn again at half the time into the stage.
MAX_DRAWS = 6
# The resumed run's own count of what each evaluation store still lacked, as its task logs it.
TODO_LINE = re.compile(
    r"Task run 'evaluate-(\w+)' - (?:\1 )?(\S+): (\d+) questions(' samples)? to "
    r"(generate|search|score)"
)
# Result files; the JSON ones are compared without their timings (keys naming seconds), and the
# analysis figures and HTML report, which embed timings, are left out.
RESULT_GLOBS = ("*.jsonl", "*.safetensors", "*.csv", "summary.json", "metrics.json")


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def experiment(workdir: Path) -> tuple[Path, Plan]:
    workdir.mkdir(parents=True)
    config_path = write_config(
        workdir / "tiny.yaml",
        tiny_config(workdir / "runs", **{"tracking.mode": "offline"}),
    )
    return config_path, plan(load_config(config_path))


def windows(p: Plan, started: float) -> list[tuple[str, float, float]]:
    """Each artifact's (name, start, end) in seconds after the run started."""
    out = []
    for a in p.all():
        begun = float((a.path / STARTED_MARKER).read_text())
        done = (a.path / COMPLETE_MARKER).stat().st_mtime
        out.append((f"{a.stage}/{a.path.name.split('-')[0]}", begun - started, done - started))
    return out


def running_stage(p: Plan) -> str:
    for a in p.all():
        if (a.path / STARTED_MARKER).is_file() and not (a.path / COMPLETE_MARKER).is_file():
            return f"{a.stage}/{a.path.name.split('-')[0]}"
    return "between stages"


def result_files(p: Plan) -> dict[str, bytes]:
    out = {}
    for a in p.all():
        for pattern in RESULT_GLOBS:
            for f in sorted(a.path.rglob(pattern)):
                data = f.read_bytes()
                if f.suffix == ".json":
                    data = json.dumps(without_timings(json.loads(data)), sort_keys=True).encode()
                out[f"{a.stage}/{a.path.name.split('-')[0]}/{f.relative_to(a.path)}"] = data
    return out


def stores(p: Plan) -> dict[str, Path]:
    return {
        f"{a.path.name.split('-')[0]}/{f.name}": f
        for a in p.evaluate.values()
        if a.path.is_dir()
        for f in a.path.glob("*.jsonl")
        if f.name != "question_scores.jsonl"
    }


def snapshot(p: Plan) -> dict[str, tuple[int, bytes]]:
    """Each evaluation store's finished questions and its whole lines, before the resume."""
    out = {}
    for name, f in stores(p).items():
        data = f.read_bytes()
        out[name] = (len(ResultStore(f).read()), data[: data.rfind(b"\n") + 1])
    return out


def left_behind(workdir: Path, within_s: float = 20.0) -> list[str]:
    deadline = time.monotonic() + within_s
    while (left := run_processes(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    names = []
    for process in left:
        try:
            names.append(" ".join(process.cmdline()[:4]))
            process.kill()
        except psutil.NoSuchProcess:
            continue
    return names


def seed_finished(reference: Plan, p: Plan, but: int) -> None:
    """Copy the reference's artifacts into the trial's plan, all but the `but`-th."""
    for i, (done, target) in enumerate(zip(reference.all(), p.all(), strict=True)):
        if i != but:
            shutil.copytree(done.path, target.path)


def trial(
    base: Path,
    index: int,
    how: str,
    reference: tuple[Plan, dict[str, bytes]],
    target: int,
    fraction: float,
    seconds: float,
) -> dict | None:
    """Stop a run `fraction` of the way into its `target`-th artifact's stage (which took
    `seconds` in the reference), then resume it; None when the run had finished by then."""
    workdir = base / f"trial-{index:02d}"
    config_path, p = experiment(workdir)
    reference_plan, reference_files = reference
    seed_finished(reference_plan, p, target)
    artifact = p.all()[target]
    proc = start_run(config_path, workdir, "run.log")
    while not (artifact.path / STARTED_MARKER).is_file() and proc.poll() is None:
        time.sleep(0.05)
    entered = time.monotonic()
    while time.monotonic() - entered < fraction * seconds and proc.poll() is None:
        time.sleep(0.05)
    stage = running_stage(p)
    stopped = time.monotonic()
    if proc.poll() is not None:
        # The stage ran faster than in the reference: nothing was left to stop.
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        return None
    if how == "sigkill":
        proc.kill()
    elif how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    code = proc.wait(timeout=RUN_TIMEOUT_S)
    exit_s = time.monotonic() - stopped
    left = left_behind(workdir)
    shm_left = [str(b) for b in shared_buffers_left(workdir)]
    before = snapshot(p)
    resume_log = workdir / "resume.log"
    resumed = start_run(config_path, workdir, "resume.log")
    resumed_code = resumed.wait(timeout=RUN_TIMEOUT_S)
    said = resume_log.read_text()
    todo = {
        f"{m.group(1)}/{m.group(2)}{'-prm' if m.group(5) == 'score' else ''}.jsonl": int(m.group(3))
        for m in TODO_LINE.finditer(said)
    }
    regenerated, not_prefix = 0, []
    for name, f in stores(p).items():
        finished, whole_lines = before.get(name, (0, b""))
        total = len(ResultStore(f).read())
        regenerated += todo.get(name, 0) - (total - finished)
        if not f.read_bytes().startswith(whole_lines):
            not_prefix.append(name)
    results = result_files(p)
    differing = sorted(
        k
        for k in reference_files.keys() | results.keys()
        if reference_files.get(k) != results.get(k)
    )
    row = {
        "stop": how,
        "target": f"{artifact.stage}/{artifact.path.name.split('-')[0]}",
        "into_stage_s": round(fraction * seconds, 1),
        "stage": stage,
        "exit_code": code,
        "resumed_exit_code": resumed_code,
        "identical": resumed_code == 0 and not differing,
        "differing_files": differing[:10],
        "finished_questions_at_stop": sum(n for n, _ in before.values()),
        "regenerated_questions": regenerated,
        "stores_rewritten": not_prefix,
        "processes_left": left,
        "shm_buffers_left": shm_left,
    }
    if how != "sigkill":
        row["exit_s"] = round(exit_s, 1)
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(row), flush=True)
    return row


def summary(rows: list[dict]) -> dict:
    """The trials' totals. A trial whose run exited 0 had been stopped between its last write
    and its exit, and is counted apart from the stops that interrupted work."""
    landed = [r for r in rows if r["exit_code"] != 0]
    terms = [r for r in landed if r["stop"] != "sigkill"]
    return {
        "stops": len(rows),
        "stops_redrawn_earlier": sum(r["draws"] - 1 for r in rows),
        "stops_as_the_run_ended": len(rows) - len(landed),
        "sigkill": sum(r["stop"] == "sigkill" for r in landed),
        "sigterm_process": sum(r["stop"] == "sigterm" for r in landed),
        "sigterm_group": sum(r["stop"] == "sigterm-group" for r in landed),
        "stages_stopped_in": sorted({r["stage"] for r in landed}),
        "identical_to_uninterrupted": sum(r["identical"] for r in landed),
        "regenerated_questions": sum(r["regenerated_questions"] for r in landed),
        "stores_rewritten": sum(len(r["stores_rewritten"]) for r in landed),
        "processes_left": sum(len(r["processes_left"]) for r in landed),
        "shm_buffers_left": sum(len(r["shm_buffers_left"]) for r in landed),
        "sigterm_exit_s_max": max((r["exit_s"] for r in terms), default=None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=24, help="SIGKILL points")
    parser.add_argument("--sigterms", type=int, default=4, help="SIGTERM points, half to groups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "fault_injection.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="inferscale-faults-"))
    try:
        config_path, p = experiment(base / "reference")
        started = time.time()
        t0 = time.monotonic()
        proc = start_run(config_path, base / "reference", "run.log")
        if proc.wait(timeout=RUN_TIMEOUT_S) != 0:
            sys.exit(f"error: the uninterrupted run failed; see {base / 'reference' / 'run.log'}")
        reference_s = time.monotonic() - t0
        stage_windows = windows(p, started)
        reference = result_files(p)
        print(f"reference: {reference_s:.0f} s; stages: {stage_windows}", flush=True)
        stops = ["sigkill"] * args.kills + [
            "sigterm" if i % 2 == 0 else "sigterm-group" for i in range(args.sigterms)
        ]
        rows = []
        for i, how in enumerate(stops):
            target = i % len(stage_windows)
            _, begin, end = stage_windows[target]
            fraction, draws = rng.random(), 1
            while True:
                row = trial(base, i, how, (p, reference), target, fraction, end - begin)
                if row is not None:
                    break
                if draws == MAX_DRAWS:
                    sys.exit(f"error: trial {i} found its run finished {MAX_DRAWS} times")
                fraction, draws = fraction / 2, draws + 1
            rows.append({**row, "draws": draws})
        result = {
            "config": "tests/pipeline_config.py tiny_config (tracking offline)",
            "seed": args.seed,
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip(),
            "reference_run_s": round(reference_s, 1),
            "stage_windows_s": [[n, round(b, 1), round(e, 1)] for n, b, e in stage_windows],
            **summary(rows),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
            "trials": rows,
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
