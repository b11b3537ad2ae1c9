"""The PRM-quality study's settings (`configs/prm_quality.yaml`): which PRMs to put behind the
strategies of an experiment that has run, and what to sweep.

The study reuses the experiment's finished stages as they are (its data, policies, step labels,
learned PRM and evaluations, found by their keys): it trains only the PRMs the experiment lacks
(other seeds, exact labels) and evaluates only what depends on the PRM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator

from inferscale.config import (
    ConfigError,
    ExperimentConfig,
    Strict,
    load_config,
    read_yaml,
    refuse,
)
from inferscale.search.registry import STRATEGIES

LABEL_KINDS = ("rollout", "exact")


class LearnedPRMs(Strict):
    # Training seeds of PRMs trained on the experiment's rollout labels; the experiment's own
    # seed is its PRM, reused.
    rollout: list[Annotated[int, Field(ge=0)]] = [0]
    # Seeds of PRMs trained on the same solutions labelled by exact step validity.
    exact: list[Annotated[int, Field(ge=0)]] = []

    @field_validator("rollout", "exact")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat one; list each seed once")
        return seeds


class OracleSettings(Strict):
    # Each AUC is a noisy oracle whose step AUC against exact validity is that value; 1.0 is the
    # exact oracle.
    aucs: list[Annotated[float, Field(gt=0.5, le=1.0)]] = [0.7, 0.8, 0.9, 0.95, 1.0]
    seed: Annotated[int, Field(ge=0)] = 0
    # prm: an oracle's scoring FLOPs count as the learned PRM's reading the same tokens would;
    # zero: the oracle is free (full accounting only: paper accounting counts no PRM).
    flops: Literal["prm", "zero"] = "prm"

    @field_validator("aucs")
    @classmethod
    def _distinct(cls, aucs: list[float]) -> list[float]:
        if len(set(aucs)) != len(aucs):
            raise ValueError(f"AUCs {aucs} repeat one; list each once")
        return sorted(aucs)


class BalanceSweep(Strict):
    # REBASE's balance temperature Tb: 0.1 in the paper, 0.2 in its official code.
    temperatures: list[Annotated[float, Field(gt=0)]] = [0.05, 0.1, 0.2, 0.5, 1.0]
    # The REBASE width the sweep searches at; None: the experiment's largest REBASE width.
    width: Annotated[int, Field(ge=1)] | None = None


class PRMQualityConfig(Strict):
    # The experiment whose finished stages the study reuses (relative to this file).
    experiment: str
    learned: LearnedPRMs = LearnedPRMs()
    oracles: OracleSettings = OracleSettings()
    strategies: list[str] = ["weighted_vote", "best_of_n", "rebase"]
    balance: BalanceSweep = BalanceSweep()
    # The FLOPs the comparisons match: paper (the policy's generated tokens) or full.
    accounting: Literal["paper", "full"] = "paper"

    @field_validator("strategies")
    @classmethod
    def _prm_strategies(cls, strategies: list[str]) -> list[str]:
        for s in strategies:
            if s not in STRATEGIES:
                raise ValueError(f"unknown strategy {s!r}; strategies are {sorted(STRATEGIES)}")
            if not STRATEGIES[s].needs_prm:
                raise ValueError(
                    f"{s} does not read a PRM, so its results are the experiment's; list only "
                    "strategies that read one (weighted_vote, best_of_n, rebase, ...)"
                )
        if len(set(strategies)) != len(strategies):
            raise ValueError(f"strategies {strategies} repeat one; list each once")
        return strategies


def load_study(path: str | Path) -> tuple[PRMQualityConfig, ExperimentConfig]:
    """The study in the YAML file `path` and the experiment it names, checked together."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"{path}: {state}; give the path of a study file (configs/prm_quality.yaml is one)"
        )
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping (experiment:, learned:, oracles:, ...); "
            "configs/prm_quality.yaml is an example"
        )
    try:
        study = PRMQualityConfig.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                message = "unknown key: check its spelling and level"
            elif e["type"] == "missing":
                message = "missing, and it is required: add it"
            else:
                message = e["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {message}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None
    experiment_path = Path(study.experiment).expanduser()
    if not experiment_path.is_absolute():
        experiment_path = path.parent / experiment_path
    if not experiment_path.is_file():
        raise refuse(
            source,
            "experiment",
            f"{experiment_path} does not exist; name the experiment file whose run this study "
            "reuses (default.yaml, next to this file)",
        )
    config = load_config(experiment_path)
    check_study(study, config, source)
    return study, config


def check_study(study: PRMQualityConfig, config: ExperimentConfig, source: str) -> None:
    """Refuse a study its experiment cannot serve, naming the setting and the fix."""
    if config.data.arithmetic is None:
        raise refuse(
            source,
            "experiment",
            "the oracle PRMs and exact labels know step validity on the synthetic task only; "
            "name an experiment with a data.arithmetic task",
        )
    prm = config.prm
    if prm is None or not prm.trained or prm.labels is None or prm.labels.kind != "rollout":
        raise refuse(
            source,
            "experiment",
            "the study compares PRMs with one trained on the experiment's rollout labels; name "
            "an experiment whose prm section trains on labels made by rollouts (prm.labels, "
            "kind: rollout), not a given PRM (prm.checkpoint) nor an oracle (prm.kind)",
        )
    if "majority_vote" not in config.evaluation.strategies:
        raise refuse(
            source,
            "experiment",
            "every gain is measured against the experiment's majority vote over its pool of "
            "samples; add majority_vote to its evaluation.strategies",
        )
    budgets = config.evaluation.search.budgets
    for s in study.strategies:
        if STRATEGIES[s].kind == "tree" and not budgets.get(s):
            raise refuse(
                source,
                "strategies",
                f"the experiment gives {s} no widths to search; set its "
                f"evaluation.search.budgets.{s}",
            )
    if "rebase" not in study.strategies and study.balance.temperatures:
        raise refuse(
            source,
            "balance.temperatures",
            "the balance temperature is REBASE's; add rebase to strategies, or give no "
            "temperatures ([])",
        )


def balance_width(study: PRMQualityConfig, config: ExperimentConfig) -> int:
    """The REBASE width the balance-temperature sweep searches at."""
    if study.balance.width is not None:
        return study.balance.width
    return max(config.evaluation.search.budgets["rebase"])
