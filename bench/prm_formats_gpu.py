"""How the PRM scorer's numbers hold on an accelerator, for every PRM format: its batched,
KV-reusing scores against one plain forward pass per solution, and against itself read one
solution at a time without a cache, in float32 and bfloat16, with eager and SDPA attention.

    python bench/prm_formats_gpu.py --device cuda --out bench/results/prm_formats_gpu.json

The checkpoints are the tiny ones of each format (random weights, the exact layouts); what is
measured is the reading, not a PRM's quality. On CPU the tests require agreement to float32
rounding (bitwise with native kernels); this says what a GPU gives.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from inferscale.models.prm_formats import PRM_FORMATS
from inferscale.models.prm_scorer import PRMScorer
from inferscale.models.tiny_checkpoints import build_tiny_prm, task_items


def reference(scorer: PRMScorer, items) -> list[list[float]]:
    """One forward pass over each whole solution, read at the format's positions."""
    out = []
    reader = scorer.reader
    for item in reader.encode(items):
        ids = torch.tensor([item.ids], device=scorer.model.device)
        with torch.no_grad():
            logits = scorer.model(input_ids=ids).logits[0].float()
        pair = logits[item.reads][:, list(reader.outputs)]
        out.append(torch.softmax(pair, dim=-1)[:, 0].tolist())
    return out


def largest_gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def measure(folder: Path, prm_format: str, device: str, dtype, attention: str, items) -> dict:
    def open_scorer(batch_size: int, cache_bytes: int) -> PRMScorer:
        return PRMScorer.from_pretrained(
            folder,
            prm_format=prm_format,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            cache_bytes=cache_bytes,
            attn_implementation=attention,
        )

    batched = open_scorer(64, 2**30)
    # Partial solutions first, as a tree search reads them: the whole ones then read cached
    # prefixes.
    start = time.perf_counter()
    batched.score([(q, steps[: max(1, len(steps) // 2)]) for q, steps in items])
    cached = batched.score(items)
    batched_seconds = time.perf_counter() - start
    plain = reference(batched, items)
    single = open_scorer(1, 0)
    alone = [single.score([item])[0] for item in items]
    return {
        "format": prm_format,
        "dtype": str(dtype).removeprefix("torch."),
        "attention": attention,
        "steps": sum(len(s) for _, s in items),
        "max_gap_batched_cached_vs_one_forward": largest_gap(cached, plain),
        "max_gap_one_by_one_uncached_vs_one_forward": largest_gap(alone, plain),
        "max_gap_batched_cached_vs_one_by_one": largest_gap(cached, alone),
        "bitwise_batched_cached_equals_one_by_one": cached == alone,
        "batched_seconds": batched_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--out", default="bench/results/prm_formats_gpu.json")
    args = parser.parse_args()
    items = task_items(100)[: args.questions]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for prm_format in PRM_FORMATS:
            folder = build_tiny_prm(Path(tmp) / prm_format, prm_format)
            for dtype in (torch.float32, torch.bfloat16):
                for attention in ("eager", "sdpa"):
                    row = measure(folder, prm_format, args.device, dtype, attention, items)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    on_gpu = args.device.startswith("cuda")
    device = torch.cuda.get_device_name() if on_gpu else platform.processor()
    result = {
        "device": device,
        "torch": torch.__version__,
        "questions": len(items),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
