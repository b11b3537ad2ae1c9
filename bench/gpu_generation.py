"""Decoding speed of the transformers backend on a GPU against the memory-bandwidth bound.

A randomly initialised Llama of about 1B parameters (bf16) decodes `--new-tokens` tokens after a
`--prompt-tokens` prompt at each batch size, through `HFBackend.generate` exactly as the
pipeline calls it. Each decoding step must read every weight that takes part (all but the input
embedding, of which it reads one row per sequence) and the whole KV cache, so at batch b a step
takes at least (weight bytes + KV bytes) / bandwidth and yields b tokens; the share of that
bound reached says how much of the GPU the backend uses. The bandwidth is measured in the same
run (a large device-to-device copy, bytes read plus written) and the datasheet's figure is kept
beside it. Needs a CUDA GPU; writes bench/results/gpu_generation.json.

    python bench/gpu_generation.py [--batches 1,64] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Dense HBM bandwidth from the datasheets, bytes per second, by the name CUDA reports.
DATASHEET_BANDWIDTH = {
    "NVIDIA H100 80GB HBM3": 3.35e12,
    "NVIDIA H200": 4.8e12,
    "NVIDIA A100-SXM4-80GB": 2.039e12,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gpu_generation.json"))
    args = parser.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from inferscale.generation.base import Request
    from inferscale.generation.hf import HFBackend
    from inferscale.models.tokenizer import build_tokenizer

    if not torch.cuda.is_available():
        sys.exit("gpu_generation needs a CUDA GPU; none is visible to torch")
    # Every number below 16000 is a token: a vocabulary of about 32k, as Llama's.
    tokenizer = build_tokenizer([], max_number=16000)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=18,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        # No end-of-sequence token: a random model must not stop early, every row decodes all.
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = None
    backend = HFBackend(
        model, tokenizer, batch_size=max(map(int, args.batches.split(","))), show_progress=False
    )
    backend.eos_ids = set()
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = 2 * (params - model.model.embed_tokens.weight.numel())
    kv_bytes_per_token = 2 * config.num_hidden_layers * config.hidden_size * 2

    prompt = " ".join(str(i) for i in range(1, args.prompt_tokens))  # BOS + 63 numbers
    measured_bw = copy_bandwidth(torch)
    name = torch.cuda.get_device_name()
    datasheet_bw = DATASHEET_BANDWIDTH.get(name)
    rows = []
    for batch in map(int, args.batches.split(",")):
        requests = [
            Request(prompt=prompt, n=1, temperature=1.0, max_new_tokens=args.new_tokens, seed=i)
            for i in range(batch)
        ]
        backend.generate(requests[:1])  # warm-up: kernels, allocator
        times = []
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            completions = backend.generate(requests)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        tokens = sum(s.num_tokens for c in completions for s in c.samples)
        assert tokens == batch * args.new_tokens, tokens
        seconds = min(times)
        # KV bytes read per step at the mean context length over the decode.
        mean_context = args.prompt_tokens + (args.new_tokens - 1) / 2
        step_bytes = weight_bytes + batch * kv_bytes_per_token * mean_context
        bound = batch * measured_bw / step_bytes
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
                    tokens / seconds / (batch * datasheet_bw / step_bytes), 4
                )
                if datasheet_bw
                else None,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    result = {
        "benchmark": "gpu_generation",
        "backend": "hf",
        "device": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "parameters": params,
        "dtype": "bfloat16",
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "copy_bandwidth_bytes_per_second": round(measured_bw),
        "datasheet_bandwidth_bytes_per_second": datasheet_bw,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
