"""GPU hours of an experiment's evaluation at paper scale (configs/llemma.yaml), from its plan.

The evaluation's planned stores (greedy, the pool of N samples, the PRM's reads of the pool,
each tree search at each budget) give the questions each holds; each question costs, with T the
mean tokens of a solution (`--solution-tokens`) and S its mean steps (`--steps-per-solution`):

- greedy: T generated; the pool: N T generated; the pool's PRM store: N T read by the PRM;
- REBASE and beam search at width b: b T generated and read. Each REBASE depth expands as many
  nodes as the width has left, one less per finished solution, so its step generations add up
  to the b solutions' steps; beam search generates at most b nodes a depth until b solutions;
- MCTS at budget b: b nodes of one step (T / S tokens, at most max_step_tokens) each,
  generated and read.

Generated tokens are decoded at the tokens/s measured by bench/gpu_generation.py for the
policy's shape at `--batch` (`--measured`), PRM reads at the prefill tokens/s measured for the
PRM's shape; the bound columns decode at the memory-bandwidth bound and read at the chip's bf16
peak (the full-accounting FLOPs of compute.py), the fastest any engine could go; the
measured_share columns decode at the share of its bound that the transformers backend reached
in another measurement at the same batch (`--share-from`, by default the 1.1B Llama of
bench/results/gpu_generation.json: a measured efficiency carried over to the larger shapes,
whose decoding is more bandwidth-bound still), the PRM still reading at the peak. The prompts'
prefill is left out (prefix caching reads each once). Shards scale linearly: the hours on G
GPUs are the GPU hours over G, a policy's evaluation split into G / g shards of the g GPUs its
weights and KV cache (`--batch` sequences at prompt + T) need within the config's
gpu_memory_utilization, a power of two; a shard of g GPUs is taken to go g times as fast as one.
The PRM's weights are not in that sum: on the policy's GPUs they need room too (a 34B PRM
beside Llemma-7B at batch 256 is just over one H200's 90%).

    python bench/paper_scale.py [--config configs/llemma.yaml] \
        [--measured bench/results/gpu_generation_llemma.json] [--solution-tokens 280]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from gpu_generation import (
    DATASHEET_BANDWIDTH,
    SHAPES,
    decode_bound,
    kv_bytes_per_token,
    weight_bytes,
)

from inferscale.compute import ModelCost, forward_flops, generation_flops
from inferscale.config import ConfigError, ExperimentConfig, load_config
from inferscale.evaluation import (
    GREEDY_STORE,
    planned_stores,
    pool_prm_store,
    pool_store,
    tree_store,
)

REPO = Path(__file__).resolve().parents[1]

# Questions in the evaluation splits the paper uses, by (hub id, split).
SPLIT_SIZES = {("HuggingFaceH4/MATH-500", "test"): 500, ("openai/gsm8k", "test"): 1319}

# Used when no measurement names the GPU: memory as CUDA reports it, dense bf16 peak.
GPU_SPECS = {
    "NVIDIA H200": {"memory_bytes": 139 * 2**30, "bf16_flops": 989e12},
    "NVIDIA H100 80GB HBM3": {"memory_bytes": 79 * 2**30, "bf16_flops": 989e12},
}

GPU_COUNTS = (8, 64)


@dataclass(frozen=True)
class Assumptions:
    solution_tokens: float  # T: mean generated tokens of a whole solution
    steps_per_solution: float  # S: mean steps of a solution (MCTS nodes are one step)
    prompt_tokens: int  # a question's prompt, for the KV cache and the PRM's context
    batch: int  # sequences decoded together


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_bytes: float
    bandwidth: float  # bytes per second
    bf16_flops: float


def question_counts(config: ExperimentConfig, split_sizes: dict) -> tuple[int, int]:
    """Questions evaluated and questions the tree searches run on, from the eval splits' sizes
    and the config's limits."""
    total = 0
    for ref in config.data.eval:
        size = split_sizes.get((ref.path, ref.split))
        if size is None:
            raise ValueError(
                f"the size of {ref.path} ({ref.split}) is unknown: give the number of questions "
                "with --questions"
            )
        total += min(size, ref.limit or size)
    return limited(config, total)


def limited(config: ExperimentConfig, questions: int) -> tuple[int, int]:
    evaluation = config.evaluation
    questions = min(questions, evaluation.limit or questions)
    return questions, min(questions, evaluation.search.limit or questions)


def store_tokens(
    config: ExperimentConfig, questions: int, searched: int, assumptions: Assumptions
) -> dict[str, dict]:
    """Each planned store's questions, generated tokens and PRM-read tokens."""
    evaluation = config.evaluation
    pool, solution = evaluation.pool_size, assumptions.solution_tokens
    step = min(solution / assumptions.steps_per_solution, evaluation.search.max_step_tokens)
    per_question = {
        GREEDY_STORE: (solution, 0.0),
        pool_store(pool): (pool * solution, 0.0),
        pool_prm_store(pool): (0.0, pool * solution),
    }
    for strategy, budgets in evaluation.search.budgets.items():
        for budget in budgets:
            tokens = budget * (step if strategy == "mcts" else solution)
            per_question[tree_store(strategy, budget)] = (tokens, tokens)
    stores = planned_stores(
        evaluation.strategies, pool, evaluation.search.budgets, questions, searched
    )
    return {
        name: {
            "questions": count,
            "generated": count * per_question[name][0],
            "prm_read": count * per_question[name][1],
        }
        for name, count in stores.items()
    }


def gpus_per_shard(shape: dict, assumptions: Assumptions, gpu: Gpu, utilization: float) -> int:
    """The fewest GPUs, a power of two, that hold the policy's weights and its batch's KV."""
    context = assumptions.prompt_tokens + assumptions.solution_tokens
    need = weight_bytes(shape) + assumptions.batch * context * kv_bytes_per_token(shape)
    gpus = 1
    while gpus * gpu.memory_bytes * utilization < need:
        gpus *= 2
    return gpus


def read_flops_per_token(prm_shape: dict, assumptions: Assumptions) -> float:
    """Full-accounting FLOPs per token of the PRM reading a solution after its prompt."""
    cost = ModelCost.from_config(prm_shape)
    length = round(assumptions.solution_tokens)
    return forward_flops(cost, length, assumptions.prompt_tokens) / length


def policy_estimate(
    config: ExperimentConfig,
    policy,
    stores: dict[str, dict],
    assumptions: Assumptions,
    gpu: Gpu,
    measured: dict | None,
    share: float | None = None,
) -> dict:
    """One policy's tokens, paper FLOPs, GPUs per shard and GPU hours (bound and measured)."""
    shape, prm_shape = shape_of(policy.hub_id), shape_of(prm_model(config))
    generated = sum(s["generated"] for s in stores.values())
    prm_read = sum(s["prm_read"] for s in stores.values())
    cost = ModelCost.from_config(shape, nominal=policy.nominal_params)
    paper_params = config.evaluation.flops.paper_params
    paper_flops = generation_flops(cost, 0, [1], "paper", paper_params) * generated
    mean_context = assumptions.prompt_tokens + assumptions.solution_tokens / 2
    bound = {
        "decode_tokens_per_second": decode_bound(
            shape, assumptions.batch, mean_context, gpu.bandwidth
        ),
        "prm_tokens_per_second": gpu.bf16_flops / read_flops_per_token(prm_shape, assumptions),
    }
    rates = {"bound": bound}
    if share is not None:
        rates["measured_share"] = {
            "decode_tokens_per_second": bound["decode_tokens_per_second"] * share,
            "prm_tokens_per_second": bound["prm_tokens_per_second"],
        }
    if measured is not None:
        rates["measured"] = measured_rates(measured, policy.hub_id, prm_model(config), assumptions)
    return {
        "policy": policy.name,
        "shape": policy.hub_id,
        "generated_tokens": generated,
        "prm_read_tokens": prm_read,
        "paper_flops": paper_flops,
        "gpus_per_shard": gpus_per_shard(
            shape, assumptions, gpu, config.generation.vllm.gpu_memory_utilization
        ),
        "stores": stores,
        "rates": rates,
        "gpu_hours": {
            kind: (
                generated / r["decode_tokens_per_second"] + prm_read / r["prm_tokens_per_second"]
            )
            / 3600
            for kind, r in rates.items()
        },
    }


def share_of_bound(measurement: dict, batch: int) -> float:
    """The share of its decoding bound that the backend reached at `batch` in a
    bench/gpu_generation.py measurement (of whichever model it measured)."""
    rows = measurement.get("rows") or measurement["models"][0]["rows"]
    by_batch = {r["batch"]: r for r in rows}
    if batch not in by_batch:
        raise ValueError(f"the --share-from file measured batches {sorted(by_batch)}, not {batch}")
    return by_batch[batch]["share_of_bound"]


def measured_rates(measured: dict, policy: str, prm: str, assumptions: Assumptions) -> dict:
    models = {m["name"]: m for m in measured["models"]}
    for name in (policy, prm):
        if name not in models:
            raise ValueError(
                f"{name} was not measured; run bench/gpu_generation.py --shapes {name}"
            )
    rows = {r["batch"]: r for r in models[policy]["rows"]}
    if assumptions.batch not in rows:
        raise ValueError(
            f"{policy} was measured at batches {sorted(rows)}, not --batch {assumptions.batch}"
        )
    return {
        "decode_tokens_per_second": rows[assumptions.batch]["tokens_per_second"],
        "prm_tokens_per_second": models[prm]["prefill"]["tokens_per_second"],
    }


def prm_model(config: ExperimentConfig) -> str:
    return config.prm.checkpoint or config.prm.init_from


def shape_of(hub_id: str) -> dict:
    if hub_id not in SHAPES:
        raise ValueError(f"no shape for {hub_id}; known: {list(SHAPES)} (bench/gpu_generation.py)")
    return SHAPES[hub_id]


def hours_on(policies: list[dict], gpus: int) -> dict:
    """Wall hours on `gpus` GPUs, shards scaling linearly, each kind of rate on its own."""
    kinds = set.intersection(*(set(p["gpu_hours"]) for p in policies))
    return {
        "gpus": gpus,
        "shards": {p["policy"]: gpus // p["gpus_per_shard"] for p in policies},
        "hours": {k: sum(p["gpu_hours"][k] for p in policies) / gpus for k in sorted(kinds)},
    }


def estimate(
    config: ExperimentConfig,
    questions: int,
    searched: int,
    assumptions: Assumptions,
    gpu: Gpu,
    measured: dict | None,
    share: float | None = None,
) -> dict:
    if assumptions.solution_tokens > config.generation.max_new_tokens:
        raise ValueError(
            f"--solution-tokens {assumptions.solution_tokens} exceeds generation.max_new_tokens "
            f"{config.generation.max_new_tokens}"
        )
    stores = store_tokens(config, questions, searched, assumptions)
    policies = [
        policy_estimate(config, p, stores, assumptions, gpu, measured, share)
        for p in config.policies
    ]
    too_few = [p["policy"] for p in policies if p["gpus_per_shard"] > min(GPU_COUNTS)]
    if too_few:
        raise ValueError(f"{too_few} need more GPUs per shard than {min(GPU_COUNTS)}")
    return {
        "questions": questions,
        "searched": searched,
        "assumptions": vars(assumptions),
        "gpu": vars(gpu),
        "measured": measured is not None,
        "share_of_bound": share,
        "policies": policies,
        "runs": [hours_on(policies, g) for g in GPU_COUNTS],
    }


def gpu_from(measured: dict | None, name: str) -> Gpu:
    """The measured GPU (its copy bandwidth and memory), else the named one's datasheet."""
    if measured is not None:
        if "models" not in measured:
            raise ValueError(
                "the --measured file holds no per-shape results: give one that "
                "bench/gpu_generation.py --shapes wrote"
            )
        name = measured["device"]
    if name not in GPU_SPECS:
        raise ValueError(f"no figures for GPU {name!r}; known: {list(GPU_SPECS)}")
    spec = GPU_SPECS[name]
    if measured is None:
        return Gpu(name, spec["memory_bytes"], DATASHEET_BANDWIDTH[name], spec["bf16_flops"])
    return Gpu(
        name,
        measured["device_memory_bytes"],
        measured["copy_bandwidth_bytes_per_second"],
        spec["bf16_flops"],
    )


def table(result: dict) -> str:
    kinds = sorted({k for p in result["policies"] for k in p["gpu_hours"]})
    lines = [
        f"{result['questions']} questions ({result['searched']} searched), "
        f"{result['assumptions']['solution_tokens']:g} tokens a solution, {result['gpu']['name']}",
        f"{'policy':<12} {'generated':>10} {'PRM read':>10} {'paper FLOPs':>11} {'GPUs/shard':>10} "
        + " ".join(f"{'GPU-h ' + k:>16}" for k in kinds),
    ]
    for p in result["policies"]:
        lines.append(
            f"{p['policy']:<12} {p['generated_tokens']:>10.3g} {p['prm_read_tokens']:>10.3g} "
            f"{p['paper_flops']:>11.3g} {p['gpus_per_shard']:>10} "
            + " ".join(f"{p['gpu_hours'][k]:>16.1f}" for k in kinds)
        )
    for run in result["runs"]:
        shards = ", ".join(f"{n} x{s}" for n, s in run["shards"].items())
        hours = ", ".join(f"{k} {h:.2f} h" for k, h in run["hours"].items())
        lines.append(f"{run['gpus']:>3} GPUs ({shards} shards): {hours}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "configs" / "llemma.yaml"))
    parser.add_argument("--measured", help="a bench/gpu_generation.py result of the shapes")
    parser.add_argument("--gpu", default="NVIDIA H200", help="without --measured")
    # Wu et al.'s Table 4: greedy Llemma-7B and -34B on MATH500 cost what ~280 tokens cost at
    # their nominal sizes (tests/test_compute.py).
    parser.add_argument("--solution-tokens", type=float, default=280.0)
    parser.add_argument("--steps-per-solution", type=float, default=8.0)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--questions", type=int, help="instead of the eval splits' sizes")
    parser.add_argument(
        "--share-from",
        default=str(REPO / "bench" / "results" / "gpu_generation.json"),
        help="a measurement whose share of the decoding bound at --batch scales the bound "
        "(the measured_share rates); '' for none",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "paper_scale.json"))
    args = parser.parse_args()
    try:
        positive = ("solution_tokens", "steps_per_solution", "prompt_tokens", "batch", "questions")
        for name in positive:
            value = getattr(args, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value:g}")
        config = load_config(args.config)
        measured = json.loads(Path(args.measured).read_text()) if args.measured else None
        if args.questions is not None:
            questions, searched = limited(config, args.questions)
        else:
            questions, searched = question_counts(config, SPLIT_SIZES)
        assumptions = Assumptions(
            args.solution_tokens, args.steps_per_solution, args.prompt_tokens, args.batch
        )
        share = None
        if args.share_from:
            measurement = json.loads(Path(args.share_from).read_text())
            share = share_of_bound(measurement, args.batch)
        result = estimate(
            config, questions, searched, assumptions, gpu_from(measured, args.gpu), measured, share
        )
    except (ConfigError, OSError, ValueError) as error:
        print(f"paper_scale: {error}", file=sys.stderr)
        sys.exit(2)
    result["config"] = os.path.relpath(args.config, REPO)
    result["measured_file"] = args.measured and os.path.relpath(args.measured, REPO)
    result["share_from"] = args.share_from and os.path.relpath(args.share_from, REPO)
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
