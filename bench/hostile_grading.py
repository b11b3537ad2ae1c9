"""How long grouping a pool of 32 sampled answers into equivalence classes (`answer_classes`,
what every voting strategy grades a question's pool with) takes when the pool holds hostile
answers, the catalogue of `tests/test_hostile_answers.py`, against a pool of ordinary answers;
and the hostile pool without its one answer that runs into the timeout.

Each pool is grouped `--repeats` times, each time by a fresh grader (its cache empty, its
math-verify worker started before timing) with the grader's default timeout; the median is
reported, with the math-verify calls and timeouts of a run. Needs no experiment. Writes
bench/results/hostile_grading.json.

    .venv/bin/python bench/hostile_grading.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=32, help="samples per pool")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "hostile_grading.json"))
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from test_hostile_answers import hostile_pool, normal_pool

    from inferscale import grading

    # Each refused or timed-out comparison logs a warning: a screenful per run.
    logging.getLogger("inferscale.grading").setLevel(logging.ERROR)
    calls = 0
    verify = grading._Worker.verify

    def counted(self, pred: str, gold: str, timeout_s: float) -> dict:
        nonlocal calls
        calls += 1
        return verify(self, pred, gold, timeout_s)

    grading._Worker.verify = counted

    pools = {
        "normal": normal_pool(args.size),
        "hostile": hostile_pool(args.size),
        # Without the one answer that costs the timeout (twice, the pool's limit).
        "hostile_without_slow": hostile_pool(args.size, slow=False),
    }
    rows = {}
    for name, pool in pools.items():
        runs = []
        for _ in range(args.repeats):
            grader = grading.Grader()
            grader.equivalent("x+1", "1+x")  # the worker is up before timing
            calls, timeouts = 0, 0

            def verdict(pred: str, gold: str, grader=grader) -> bool | None:
                nonlocal timeouts
                result = grader.verdict(pred, gold)
                timeouts += result is None
                return result

            start = time.perf_counter()
            classes = grading.answer_classes(pool, verdict)
            seconds = time.perf_counter() - start
            grader.close()
            runs.append(
                {
                    "seconds": round(seconds, 2),
                    "math_verify_calls": calls,
                    "timeouts": timeouts,
                    "classes": len({c for c in classes if c is not None}),
                }
            )
        row = {
            "samples": len(pool),
            "answer_chars": sum(len(a) for a in pool if a is not None),
            "seconds": statistics.median(r["seconds"] for r in runs),
            "runs": runs,
        }
        rows[name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
    result = {
        "pools": rows,
        "grader": {
            "timeout_s": grader.timeout_s,
            "max_verify_chars": grading.MAX_VERIFY_CHARS,
            "max_verify_depth": grading.MAX_VERIFY_DEPTH,
            "verify_calls_per_answer": grading.VERIFY_CALLS_PER_ANSWER,
            "max_timeouts_per_pool": grading.MAX_TIMEOUTS_PER_POOL,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
