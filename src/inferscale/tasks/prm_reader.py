"""The experiment's PRM scorer, trained, given or an oracle, as the stages that score steps open
it."""

from __future__ import annotations

from pathlib import Path

from inferscale.config import ExperimentConfig
from inferscale.data.prepare import step_format
from inferscale.models.oracle_prm import OracleScorer


def open_prm(config: ExperimentConfig, prm_dir: str | Path | None):
    """The PRM in `prm_dir` read in its format, on the generation's device and dtype; the
    oracle of an oracle kind, which reads no folder."""
    assert config.prm is not None
    if config.prm.is_oracle:
        oracle = config.prm.oracle_settings
        return oracle_scorer(config, oracle.auc, oracle.seed)
    import torch

    from inferscale.models.prm_scorer import PRMScorer

    gen = config.generation
    return PRMScorer.from_pretrained(
        prm_dir,
        batch_size=config.prm.batch_size,
        cache_bytes=config.prm.cache_bytes,
        device=gen.device,
        dtype=getattr(torch, gen.dtype),
        threads=gen.threads,
        prm_format=config.prm.format,
    )


def oracle_scorer(config: ExperimentConfig, auc: float, seed: int) -> OracleScorer:
    """An oracle PRM of the experiment's synthetic task."""
    assert config.data.arithmetic is not None
    return OracleScorer(
        modulus=config.data.arithmetic.modulus,
        answer_phrase=step_format(config.data).answer_phrase,
        auc=auc,
        seed=seed,
    )
