"""Which CPU kernel choices change the numbers, that the pins in `inferscale.numerics` hold them
fixed, and what the pins cost in speed.

1. Training matrix: the same short SFT of the default's S model (under the real `deepspeed`
   launcher, as the sft stage runs it), once per setting. Native runs
   (INFERSCALE_CPU_NUMERICS=native) vary one kernel choice at a time: which change the weights?
   Pinned runs vary what lies under the pins (MKL's own dispatch, a rerun): do the weights stay
   bit-identical? Each run is compared by a hash of its final weights and its largest weight
   difference from the pinned baseline; the rank reports its ATen capability and variables.
2. Generation: the CLI process's side (generation, PRM scoring): logits of one batched forward
   of the trained model in a fresh process per setting, thread counts included.
3. Speed: a training step (batch 64) and a greedy generation (64 prompts, 40 tokens) of the S
   model, pinned against native, in fresh processes alternated (A B B A ...); each process
   reports the least CPU time of several repeats, on one thread (on a machine shared with other
   work, wall time and multi-thread CPU time mostly measure the others); the ratio
   pinned/native of each pair, median and range.

Writes bench/results/cpu_numerics.json.

    .venv/bin/python bench/cpu_numerics.py [--steps 12] [--pairs 6] [--speed-only]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from inferscale.config import parse_config
from inferscale.data.prepare import TOKENIZER_DIR, TRAIN_FILE, prepare_data
from inferscale.models.launch import run_sft, sft_spec
from inferscale.numerics import MODE_ENV, PIN_NAMES, cpu_model, cpu_pins

REPO = Path(__file__).resolve().parents[1]
# Variables a variant may set: all are cleared before each run, so each starts from the same.
VARIED = (MODE_ENV, *PIN_NAMES, "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")
NATIVE = {MODE_ENV: "native"}

# (name, environment, threads). Native: the machine's own choice, then one knob at a time.
TRAINING = [
    ("native", NATIVE, 2),
    ("native ATEN_CPU_CAPABILITY=default", {**NATIVE, "ATEN_CPU_CAPABILITY": "default"}, 2),
    ("native ATEN_CPU_CAPABILITY=avx2", {**NATIVE, "ATEN_CPU_CAPABILITY": "avx2"}, 2),
    ("native MKL_CBWR=AUTO", {**NATIVE, "MKL_CBWR": "AUTO"}, 2),
    ("native MKL_CBWR=AVX2", {**NATIVE, "MKL_CBWR": "AVX2"}, 2),
    ("native MKL_CBWR=COMPATIBLE", {**NATIVE, "MKL_CBWR": "COMPATIBLE"}, 2),
    ("native MKL_ENABLE_INSTRUCTIONS=SSE4_2", {**NATIVE, "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 2),
    ("native ONEDNN_MAX_CPU_ISA=SSE41", {**NATIVE, "ONEDNN_MAX_CPU_ISA": "SSE41"}, 2),
    ("native threads=1", NATIVE, 1),
    ("pinned", {}, 2),
    ("pinned again", {}, 2),
    ("pinned MKL_ENABLE_INSTRUCTIONS=SSE4_2", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 2),
    ("pinned MKL_ENABLE_INSTRUCTIONS=AVX", {"MKL_ENABLE_INSTRUCTIONS": "AVX"}, 2),
    ("pinned threads=1", {}, 1),
    ("native, every pin set by hand", {**NATIVE, **cpu_pins({})}, 2),
]
GENERATION = [
    ("native", NATIVE, 2),
    ("native ATEN_CPU_CAPABILITY=default", {**NATIVE, "ATEN_CPU_CAPABILITY": "default"}, 2),
    ("native MKL_CBWR=COMPATIBLE", {**NATIVE, "MKL_CBWR": "COMPATIBLE"}, 2),
    ("native ONEDNN_MAX_CPU_ISA=SSE41", {**NATIVE, "ONEDNN_MAX_CPU_ISA": "SSE41"}, 2),
    ("pinned", {}, 2),
    ("pinned MKL_ENABLE_INSTRUCTIONS=SSE4_2", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 2),
    ("pinned threads=1", {}, 1),
    ("pinned threads=3", {}, 3),
    ("pinned threads=4", {}, 4),
]

# One batched forward of a trained model in a fresh process: importing inferscale first pins
# the process as the CLI does.
FORWARD = """
import hashlib, json, sys
import inferscale
import torch
from transformers import AutoModelForCausalLM
from inferscale.numerics import describe
torch.set_num_threads(int(sys.argv[2]))
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
gen = torch.Generator().manual_seed(0)
ids = torch.randint(4, model.config.vocab_size, (64, 60), generator=gen)
with torch.no_grad():
    logits = model(input_ids=ids).logits
torch.save(logits, sys.argv[3])
print(json.dumps({"logits": hashlib.sha256(logits.numpy().tobytes()).hexdigest()[:16],
                  "numerics": describe()}))
"""

# Training steps and greedy generation of the default's S model on random tokens, timed.
SPEED = """
import json, sys, time
import inferscale
import torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(1)
torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                     tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
model = LlamaForCausalLM(config)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(3, 64, (64, 70), generator=torch.Generator().manual_seed(0))
def step():
    model(input_ids=ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
def generate():
    with torch.no_grad():
        model.generate(input_ids=ids[:, :20], max_new_tokens=40, min_new_tokens=40,
                       do_sample=False)
def fastest(fn, n):
    # CPU time of one thread (no thread waits on another), the least over n repeats: load from
    # other processes only ever adds to it.
    fn()
    times = []
    for _ in range(n):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)
train = fastest(step, int(sys.argv[1]))
model.eval()
gen = fastest(generate, int(sys.argv[2]))
print(json.dumps({"train_step_s": train, "generate_batch_s": gen}))
"""


@contextlib.contextmanager
def environ(env: dict[str, str]):
    """os.environ with the varied variables cleared and `env` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in VARIED}
    for k in VARIED:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def child_env(env: dict[str, str]) -> dict[str, str]:
    with environ(env):
        return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def weights(model_dir: Path):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def weights_hash(tensors: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].numpy().tobytes())
    return digest.hexdigest()[:16]


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def experiment_config(work: Path, steps: int) -> dict:
    config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    config["output_dir"] = str(work / "runs")
    config["data"]["arithmetic"] |= {"train_size": 640, "test_size": 16}
    config["sft"] |= {
        "max_steps": steps,
        "per_device_batch_size": 32,
        "warmup_steps": 2,
        "logging_steps": 1,
        "deepspeed": str(REPO / "configs" / "deepspeed" / "zero2.json"),
    }
    config["tracking"] = {"mode": "disabled"}
    return config


def training_matrix(work: Path, steps: int) -> list[dict]:
    config = parse_config(experiment_config(work, steps), base_dir=REPO / "configs")
    prepare_data(config.data, config.seed, work / "data")
    rows = []
    for i, (name, env, threads) in enumerate(TRAINING):
        out = work / f"train-{i}"
        sft = config.sft.model_copy(update={"threads_per_process": threads})
        spec = sft_spec(
            config.policies[0],
            sft,
            config.data.format.model_dump(),
            str(work / "data" / TOKENIZER_DIR),
            work / "data" / TRAIN_FILE,
            out,
            seed=config.seed,
            report_to=[],
        )
        with environ(env):
            summary = run_sft(spec, sft, {}, out / "train.log")
        tensors = weights(out)
        row = {
            "setting": name,
            "threads": threads,
            "weights": weights_hash(tensors),
            "final_loss": summary["final_loss"],
            "train_seconds": round(summary["train_seconds"], 1),
            "rank": summary["numerics"],
            "dir": str(out),
        }
        rows.append(row)
        print(f"{name:<42} {row['weights']}  loss {row['final_loss']}  {row['train_seconds']} s")
    base = weights(Path(next(r for r in rows if r["setting"] == "pinned")["dir"]))
    native = weights(Path(rows[0]["dir"]))
    for row in rows:
        tensors = weights(Path(row.pop("dir")))
        row["max_weight_difference_from_pinned"] = max_difference(tensors, base)
        row["max_weight_difference_from_native"] = max_difference(tensors, native)
    return rows


def generation_matrix(work: Path, model_dir: Path) -> list[dict]:
    import torch

    rows, saved = [], {}
    for i, (name, env, threads) in enumerate(GENERATION):
        out = work / f"logits-{i}.pt"
        result = subprocess.run(
            [sys.executable, "-c", FORWARD, str(model_dir), str(threads), str(out)],
            env=child_env(env),
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(result.stdout.strip().splitlines()[-1])
        saved[name] = torch.load(out)
        rows.append({"setting": name, "threads": threads, **report})
        print(f"{name:<42} logits {report['logits']}")
    for row in rows:
        diff = (saved[row["setting"]] - saved["pinned"]).abs().max()
        row["max_logit_difference_from_pinned"] = float(diff)
    return rows


def speed(pairs: int, steps: int = 10, generations: int = 4) -> dict:
    runs = {"pinned": [], "native": []}
    for i in range(pairs):
        order = ("pinned", "native") if i % 2 == 0 else ("native", "pinned")
        for mode in order:
            result = subprocess.run(
                [sys.executable, "-c", SPEED, str(steps), str(generations)],
                env=child_env({} if mode == "pinned" else NATIVE),
                capture_output=True,
                text=True,
                check=True,
            )
            runs[mode].append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"pair {i + 1}: " + ", ".join(f"{m} {runs[m][-1]}" for m in order))
    ratios = {}
    for what in ("train_step_s", "generate_batch_s"):
        pairs_of = zip(runs["pinned"], runs["native"], strict=True)
        values = [p[what] / n[what] for p, n in pairs_of]
        ratios[what.removesuffix("_s")] = {
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
            "each": [round(v, 3) for v in values],
        }
    return {
        "pairs": pairs,
        "repeats": {"train_step": steps, "generate_batch": generations},
        "pinned_over_native": ratios,
        "seconds": {
            m: [{k: round(v, 4) for k, v in r.items()} for r in rs] for m, rs in runs.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12, help="SFT steps per training run")
    parser.add_argument("--pairs", type=int, default=6, help="pinned/native pairs timed")
    parser.add_argument(
        "--speed-only", action="store_true", help="time again; keep the matrices of --out"
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "cpu_numerics.json"))
    args = parser.parse_args()
    import torch

    if args.speed_only:
        result = json.loads(Path(args.out).read_text())
        result["speed"] = speed(args.pairs)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["speed"]["pinned_over_native"], indent=2))
        return
    work = Path(tempfile.mkdtemp(prefix="inferscale-numerics-"))
    start = time.perf_counter()
    training = training_matrix(work, args.steps)
    pinned_dir = work / f"train-{[n for n, _, _ in TRAINING].index('pinned')}"
    generation = generation_matrix(work, pinned_dir)
    timing = speed(args.pairs)
    result = {
        "machine": {
            "processor": cpu_model(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "own_cpu_capability": training[0]["rank"]["cpu_capability"],
        },
        "pins": cpu_pins({}),
        "training": training,
        "generation": generation,
        "speed": timing,
        "seconds": round(time.perf_counter() - start),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(timing["pinned_over_native"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
