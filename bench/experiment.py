"""What the benchmarks that read a finished experiment share: its checkpoints, test questions,
search settings and PRM, and the vLLM settings a CPU run needs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Finished:
    config: Any  # ExperimentConfig
    policy: str
    policy_dir: Path
    prm_dir: Path
    problems: list
    settings: Any  # SearchSettings

    @property
    def fmt(self):
        return self.settings.fmt


def finished_experiment(config_path: str, policy: str | None) -> Finished:
    """The experiment's artifacts for `policy` (default: the first); exits with the fix when
    the experiment has not been run to the end with this code."""
    from inferscale.config import load_config
    from inferscale.data.prepare import TEST_FILE, step_format
    from inferscale.data.records import read_problems
    from inferscale.search.tree import SearchSettings
    from inferscale.stages import plan

    config = load_config(config_path)
    p = plan(config)
    policy = policy or config.policies[0].name
    needed = [p.prepare_data, p.sft[policy], p.train_prm]
    missing = [str(a.path) for a in needed if a is None or not a.complete]
    if missing:
        sys.exit(f"error: the experiment is not finished ({missing}); run `make run` first")
    gen, search = config.generation, config.evaluation.search
    settings = SearchSettings(
        fmt=step_format(config.data),
        temperature=gen.temperature,
        top_p=gen.top_p,
        max_step_tokens=search.max_step_tokens,
        max_depth=search.max_depth,
        seed=config.evaluation.seed,
        balance_temperature=search.balance_temperature,
    )
    return Finished(
        config=config,
        policy=policy,
        policy_dir=p.sft[policy].path,
        prm_dir=p.train_prm.path,
        problems=read_problems(p.prepare_data.path / TEST_FILE),
        settings=settings,
    )


def with_backend(generation, backend: str, kv_cache_gib: float):
    """The generation section with `backend`; for vLLM on a CPU, a KV cache of kv_cache_gib and
    chunked prefill off unless the config sets it (see the README)."""
    if backend == "vllm":
        update: dict[str, Any] = {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)}
        if generation.vllm.enable_chunked_prefill is None:
            update["enable_chunked_prefill"] = False
        vllm = generation.vllm.model_copy(update=update)
        return generation.model_copy(update={"backend": backend, "vllm": vllm})
    return generation.model_copy(update={"backend": backend})


def open_scorer(finished: Finished):
    from inferscale.models.prm_scorer import PRMScorer

    config = finished.config
    return PRMScorer.from_pretrained(
        finished.prm_dir,
        batch_size=config.prm.batch_size,
        cache_bytes=config.prm.cache_bytes,
        threads=config.generation.threads,
    )
