"""One policy's results that depend on the PRM, with another PRM behind the strategies.

Greedy decoding and the pool of samples do not depend on the PRM: they are read from the
experiment's finished evaluation, never generated again. What does is computed into the
variant's own stores, per question and resumable as in an evaluation: the PRM's scores of the
pool (weighted vote, best-of-n), and each tree search at each width, plus REBASE at one width
for each balance temperature of the sweep. With the experiment's own PRM, the experiment's
stores of these serve too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from inferscale.evaluation import (
    GREEDY_STORE,
    EvaluationPlan,
    generate_missing,
    ordered_records,
    planned_stores,
    pool_store,
    score_stores,
    store_path,
    tree_scores,
    tree_store,
)
from inferscale.generation.base import Backend
from inferscale.progress import Progress, no_progress
from inferscale.results import ResultStore
from inferscale.search.registry import STRATEGIES
from inferscale.search.tree import Scorer

REBASE = "rebase"


def balance_store(width: int, temperature: float) -> str:
    """The store of REBASE at `width` with balance temperature `temperature`."""
    return f"{tree_store(REBASE, width)}-tb{temperature:g}"


def variant_plan(plan: EvaluationPlan, strategies: list[str]) -> EvaluationPlan:
    """The experiment's plan restricted to the study's strategies, which read the PRM."""
    tree = [s for s in strategies if STRATEGIES[s].kind == "tree"]
    return replace(
        plan,
        strategies=list(strategies),
        search_budgets={s: plan.search_budgets[s] for s in tree},
    )


def evaluate_variant(
    problems: list,
    search_ids: set[str],
    plan: EvaluationPlan,
    base_dir: Path,
    out_dir: Path,
    open_backend: Callable[[], Backend],
    open_scorer: Callable[[], Scorer],
    experiments_prm: bool,
    balance: list[float],
    width: int | None,
    log: Callable[[str], None] = print,
    progress: Progress = no_progress,
) -> dict:
    """Compute what out_dir lacks, then score: {"scores": the strategies' QuestionScores,
    "balance": {Tb: REBASE's QuestionScores at `width`}}.

    `plan` is the experiment's plan for the policy with the variant's PRM cost, restricted to
    the study's strategies (`variant_plan`); `base_dir`, the experiment's finished evaluation;
    `experiments_prm`, whether the variant is the experiment's own PRM (its stores serve)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pool_size = plan.budgets[-1]
    shared = {GREEDY_STORE, pool_store(pool_size)}
    if experiments_prm:
        # What the experiment evaluated with its own PRM at its own settings.
        finished = (base_dir / f"{name}.jsonl" for name in _base_stores(plan))
        shared |= {p.stem for p in finished if p.is_file()}

    def open_store(name: str) -> ResultStore:
        return ResultStore(store_path(base_dir if name in shared else out_dir, name))

    generate_missing(
        problems, search_ids, plan, open_store, open_backend, open_scorer, log, progress
    )
    default_tb = plan.search.balance_temperature if plan.search is not None else None

    def swept_store(tb: float) -> ResultStore:
        if tb == default_tb and width in plan.search_budgets.get(REBASE, []):
            return open_store(tree_store(REBASE, width))  # REBASE at that width is this one
        return ResultStore(store_path(out_dir, balance_store(width, tb)))

    for tb in balance:
        sweep = replace(
            plan,
            strategies=[REBASE],
            search=replace(plan.search, balance_temperature=tb),
            search_budgets={REBASE: [width]},
        )
        generate_missing(
            problems,
            search_ids,
            sweep,
            lambda name, tb=tb: swept_store(tb),
            open_backend,
            open_scorer,
            log,
            progress,
        )
    order = {p.id: i for i, p in enumerate(problems)}
    return {
        "scores": score_stores(problems, search_ids, open_store, plan)["scores"],
        "balance": {
            tb: tree_scores(ordered_records(swept_store(tb), search_ids, order), REBASE, width)
            for tb in balance
        },
    }


def _base_stores(plan: EvaluationPlan) -> list[str]:
    """The stores the experiment's evaluation of the plan's strategies wrote."""
    stores = planned_stores(plan.strategies, plan.budgets[-1], plan.search_budgets, 0, 0)
    return [name for name in stores if name not in (GREEDY_STORE, pool_store(plan.budgets[-1]))]
