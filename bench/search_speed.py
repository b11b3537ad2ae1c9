"""Wall time per generated token of REBASE against best-of-n at the same width, with the same
backend, policy and PRM: the cost of searching step by step instead of sampling whole solutions.

Both run on the same questions of the experiment's test split. Best-of-n samples `width`
solutions per question and scores each with the PRM; REBASE (width `width`) expands and scores
step by step. Each side's seconds are divided by its generated tokens, so the ratio says how much
more a token costs inside the tree search. Each width is measured `--repeats` times, both sides
back to back, with other seeds in each repeat and the PRM's and the backend's caches emptied
(so no repeat reuses another's work); the median ratio is reported. Needs a finished experiment
(its policy and PRM checkpoints): run `make run` first. Writes bench/results/search_speed.json.

    .venv/bin/python bench/search_speed.py [--config configs/default.yaml] [--policy S]
    .venv/bin/python bench/search_speed.py --backend vllm --out bench/results/search_speed_vllm.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--policy", default=None, help="policy name (default: the first)")
    parser.add_argument("--widths", default="8,32")
    parser.add_argument("--questions", type=int, default=100)
    # Single repeats of one ratio spread by a third and more on 2 shared cores: 5 steady the median.
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--backend",
        choices=("hf", "vllm"),
        default=None,
        help="generate with this backend instead of the config's (the checkpoints stay the same)",
    )
    parser.add_argument(
        "--kv-cache-gib",
        type=float,
        default=2.0,
        help="vLLM's KV cache size, for --backend vllm on a CPU (default 2)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "search_speed.json"))
    args = parser.parse_args()

    from experiment import finished_experiment, open_scorer, sampling_requests, with_backend

    from inferscale.generation.backends import load_backend
    from inferscale.search.rebase import rebase

    run = finished_experiment(args.config, args.policy)
    policy, fmt, settings = run.policy, run.fmt, run.settings
    gen = run.config.generation
    problems = run.problems[: args.questions]
    if args.backend and args.backend != gen.backend:
        gen = with_backend(gen, args.backend, args.kv_cache_gib)
    backend = load_backend(gen, run.policy_dir)
    scorer = open_scorer(run)
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        per_call = max(1, gen.batch_size // width)
        chunks = [problems[i : i + per_call] for i in range(0, len(problems), per_call)]
        repeats = []
        for repeat in range(args.repeats):
            seed = repeat * len(problems)
            scorer.clear_cache()
            if hasattr(backend, "clear_cache"):
                backend.clear_cache()
            start = time.perf_counter()
            tokens = 0
            for k, chunk in enumerate(chunks):
                completions = backend.generate(
                    sampling_requests(run, chunk, width, seed + k * per_call)
                )
                items = [
                    (q.question, fmt.split_steps(s.text) or [""])
                    for q, c in zip(chunk, completions, strict=True)
                    for s in c.samples
                ]
                scorer.score(items)
                tokens += sum(s.num_tokens for c in completions for s in c.samples)
            sampling_s = time.perf_counter() - start

            tree_settings = dataclasses.replace(settings, seed=settings.seed + seed)
            start = time.perf_counter()
            tree_tokens = 0
            for chunk in chunks:
                for result in rebase(chunk, backend, scorer, width, tree_settings):
                    tree_tokens += result.generated_tokens
            rebase_s = time.perf_counter() - start
            repeats.append(
                {
                    "best_of_n_seconds": sampling_s,
                    "best_of_n_tokens": tokens,
                    "rebase_seconds": rebase_s,
                    "rebase_tokens": tree_tokens,
                    "ratio": (rebase_s / tree_tokens) / (sampling_s / tokens),
                }
            )
        row = {
            "width": width,
            "questions": len(problems),
            "ratio": statistics.median(r["ratio"] for r in repeats),
            "repeats": repeats,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    backend.close()
    scorer.close()
    result = {
        "policy": policy,
        "backend": gen.backend,
        "device": gen.device,
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "rows": rows,
        "target_ratio_at_most": 1.5,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
