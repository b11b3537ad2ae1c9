"""Decoding speed of the transformers backend on a GPU against the memory-bandwidth bound.

Randomly initialised Llama-architecture models (bf16, made directly on the GPU) of a named
shape decode `--new-tokens` tokens after a `--prompt-tokens` prompt at each batch size, through
`HFBackend.generate` exactly as the pipeline calls it: one request of `batch` samples, as a
question's pool is drawn. Each decoding step must read every weight that takes part (all but
the input embedding, of which it reads one row per sequence) and the whole KV cache, so at batch
b a step takes at least (weight bytes + KV bytes) / bandwidth and yields b tokens; the share of
that bound reached says how much of the GPU the backend uses. The bandwidth is measured in the
same run (a large device-to-device copy, bytes read plus written) and the datasheet's figure is
kept beside it. Each shape also reads `--prefill` sequences in one forward pass without a
cache, as a PRM reads solutions: its tokens per second. Needs a CUDA GPU.

    python bench/gpu_generation.py [--shapes llama-1b] [--batches 1,64,256] [--out PATH]
    python bench/gpu_generation.py --shapes EleutherAI/llemma_7b,EleutherAI/llemma_34b \
        --batches 64,256 --prompt-tokens 128 --out bench/results/gpu_generation_llemma.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from inferscale.compute import count_parameters  # noqa: E402

# Dense HBM bandwidth from the datasheets, bytes per second, by the name CUDA reports.
DATASHEET_BANDWIDTH = {
    "NVIDIA H100 80GB HBM3": 3.35e12,
    "NVIDIA H200": 4.8e12,
    "NVIDIA A100-SXM4-80GB": 2.039e12,
}

# Model shapes by name: a 1.1B Llama, and the Llemmas by hub id (CodeLlama-7B's and -34B's
# configs, the sizes tests/test_compute.py checks against their published parameter counts).
SHAPES = {
    "llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 18,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": 32004,
    },
    "EleutherAI/llemma_7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32016,
    },
    "EleutherAI/llemma_34b": {
        "hidden_size": 8192,
        "intermediate_size": 22016,
        "num_hidden_layers": 48,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
    },
}


def copy_bandwidth(torch, gib: float = 4.0, repeats: int = 20) -> float:
    """Bytes per second of a device-to-device copy, read and written bytes both counted."""
    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n * 2 * repeats / elapsed


def kv_bytes_per_token(shape: dict) -> int:
    """bf16 keys and values of one token in every layer."""
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    return 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * head_dim * 2


def weight_bytes(shape: dict) -> int:
    """bf16 weights of the model (untied input and output embeddings)."""
    return 2 * count_parameters({**shape, "tie_word_embeddings": False})["total"]


def decode_bound(shape: dict, batch: int, mean_context: float, bandwidth: float) -> float:
    """Tokens per second at which `batch` sequences decode when each step only reads, at
    `bandwidth`, every weight but the input embedding and the KV cache at `mean_context`."""
    read_weights = weight_bytes(shape) - 2 * shape["vocab_size"] * shape["hidden_size"]
    return batch * bandwidth / (read_weights + batch * kv_bytes_per_token(shape) * mean_context)


def tokenizer_for(vocab_size: int):
    """The package's word-level tokenizer with exactly `vocab_size` tokens: the special tokens,
    then every number below a bound, bare and after a space."""
    from inferscale.models.tokenizer import build_tokenizer

    special = len(build_tokenizer([], max_number=0))
    tokenizer = build_tokenizer([], max_number=(vocab_size - special) // 2)
    if len(tokenizer) != vocab_size:
        raise ValueError(f"no tokenizer of {vocab_size} tokens: {special} special + 2 per number")
    return tokenizer


def build_model(torch, shape: dict, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **shape,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        # No end-of-sequence token: a random model must not stop early, every row decodes all.
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    # Made in bf16 on the GPU: a 34B model in float32 would not fit, and on the CPU its random
    # initialisation would take many minutes.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config.eos_token_id = None
    return model


def measure_decoding(torch, backend, batch: int, prompt: str, new_tokens: int, repeats: int):
    """Seconds (the fastest of `repeats`) to draw `batch` samples of `new_tokens` tokens."""
    from inferscale.generation.base import Request

    request = Request(prompt=prompt, n=batch, temperature=1.0, max_new_tokens=new_tokens, seed=0)
    backend.generate([Request(prompt=prompt, n=1, max_new_tokens=4, seed=0)])  # warm-up
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        completions = backend.generate([request])
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    tokens = sum(s.num_tokens for c in completions for s in c.samples)
    assert tokens == batch * new_tokens, tokens
    return tokens, min(times)


def measure_prefill(torch, model, batch: int, length: int, repeats: int = 3) -> float:
    """Tokens per second of one cacheless forward pass over batch x length tokens."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(
        4, model.config.vocab_size, (batch, length), device="cuda", generator=generator
    )
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            torch.cuda.synchronize()
            start = time.perf_counter()
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return batch * length / min(times[1:])  # the first pass warms up


def measure_shape(torch, name: str, args, batches: list[int], bandwidth: float, datasheet_bw):
    from inferscale.generation.hf import HFBackend

    shape = SHAPES[name]
    tokenizer = tokenizer_for(shape["vocab_size"])
    start = time.perf_counter()
    model = build_model(torch, shape, tokenizer)
    torch.cuda.synchronize()
    build_seconds = time.perf_counter() - start
    backend = HFBackend(model, tokenizer, batch_size=max(batches), show_progress=False)
    backend.eos_ids = set()
    params = sum(p.numel() for p in model.parameters())
    assert 2 * params == weight_bytes(shape), (params, shape)
    prompt = " ".join(str(i) for i in range(1, args.prompt_tokens))  # BOS + the numbers
    rows = []
    for batch in batches:
        tokens, seconds = measure_decoding(
            torch, backend, batch, prompt, args.new_tokens, args.repeats
        )
        mean_context = args.prompt_tokens + (args.new_tokens - 1) / 2
        bound = decode_bound(shape, batch, mean_context, bandwidth)
        rows.append(
            {
                "batch": batch,
                "tokens": tokens,
                "seconds": round(seconds, 4),
                "tokens_per_second": round(tokens / seconds, 1),
                "ms_per_step": round(1000 * seconds / args.new_tokens, 3),
                "bound_tokens_per_second": round(bound, 1),
                "share_of_bound": round(tokens / seconds / bound, 4),
                "share_of_datasheet_bound": round(
                    tokens / seconds / decode_bound(shape, batch, mean_context, datasheet_bw), 4
                )
                if datasheet_bw
                else None,
                "peak_memory_bytes": torch.cuda.max_memory_allocated(),
            }
        )
        print(name, json.dumps(rows[-1]), flush=True)
    prefill_batch, prefill_length = map(int, args.prefill.split("x"))
    prefill = {
        "batch": prefill_batch,
        "length": prefill_length,
        "tokens_per_second": round(measure_prefill(torch, model, prefill_batch, prefill_length), 1),
    }
    print(name, "prefill", json.dumps(prefill), flush=True)
    backend.close()
    del model, backend
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return {
        "name": name,
        "shape": shape,
        "parameters": params,
        "weight_bytes": weight_bytes(shape),
        "kv_bytes_per_token": kv_bytes_per_token(shape),
        "build_seconds": round(build_seconds, 2),
        "rows": rows,
        "prefill": prefill,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", default="llama-1b", help=f"comma-separated, of {list(SHAPES)}")
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefill", default="16x512", help="BATCHxLENGTH of the prefill pass")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_generation.json"))
    args = parser.parse_args()
    names = args.shapes.split(",")
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        sys.exit(f"unknown shapes {unknown}; known: {list(SHAPES)}")

    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_generation needs a CUDA GPU; none is visible to torch")
    batches = [int(b) for b in args.batches.split(",")]
    measured_bw = copy_bandwidth(torch)
    name = torch.cuda.get_device_name()
    datasheet_bw = DATASHEET_BANDWIDTH.get(name)
    models = [measure_shape(torch, n, args, batches, measured_bw, datasheet_bw) for n in names]
    result = {
        "benchmark": "gpu_generation",
        "backend": "hf",
        "device": name,
        "device_memory_bytes": torch.cuda.get_device_properties(0).total_memory,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": "bfloat16",
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "copy_bandwidth_bytes_per_second": round(measured_bw),
        "datasheet_bandwidth_bytes_per_second": datasheet_bw,
        "models": models,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
