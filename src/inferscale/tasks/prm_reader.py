"""The experiment's PRM scorer, trained or given, as the stages that score steps open it."""

from __future__ import annotations

from pathlib import Path

from inferscale.config import ExperimentConfig


def open_prm(config: ExperimentConfig, prm_dir: str | Path):
    """The PRM in `prm_dir` read in its format, on the generation's device and dtype."""
    import torch

    from inferscale.models.prm_scorer import PRMScorer

    gen = config.generation
    assert config.prm is not None
    return PRMScorer.from_pretrained(
        prm_dir,
        batch_size=config.prm.batch_size,
        cache_bytes=config.prm.cache_bytes,
        device=gen.device,
        dtype=getattr(torch, gen.dtype),
        threads=gen.threads,
        prm_format=config.prm.format,
    )
