"""Build the configured generation backend for a model directory."""

from __future__ import annotations

from pathlib import Path

from inferscale.config import GenerationConfig
from inferscale.generation.base import Backend


def load_backend(generation: GenerationConfig, model_dir: str | Path) -> Backend:
    if generation.backend == "vllm":
        from inferscale.generation.vllm_backend import VLLMBackend

        return VLLMBackend.from_config(generation, model_dir)

    import torch

    from inferscale.generation.hf import HFBackend

    if generation.threads:
        torch.set_num_threads(generation.threads)
    return HFBackend.from_pretrained(
        model_dir,
        device=generation.device,
        dtype=getattr(torch, generation.dtype),
        batch_size=generation.batch_size,
        prefix_cache_bytes=generation.prefix_cache_bytes,
    )
