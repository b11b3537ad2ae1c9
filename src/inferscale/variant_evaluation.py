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

from inferscale.data.step_labels import StepLabelled
from inferscale.data.step_validity import label_agreement, prefix_validity
from inferscale.evaluation import (
    GREEDY_STORE,
    EvaluationPlan,
    IncompleteResults,
    generate_missing,
    planned_stores,
    pool_prm_store,
    pool_store,
    store_path,
    tree_scores,
    tree_store,
    vote_scores,
)
from inferscale.generation.base import Backend
from inferscale.models.prm_metrics import evaluate_step_scores, roc_auc
from inferscale.progress import Progress, no_progress
from inferscale.results import ResultStore
from inferscale.scores import QuestionScore
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
        finished = (base_dir / f"{name}.jsonl" for name in _base_stores(plan, base_dir))
        shared |= {p.stem for p in finished if p.is_file()}

    def open_store(name: str) -> ResultStore:
        return ResultStore(store_path(base_dir if name in shared else out_dir, name))

    generate_missing(
        problems, search_ids, plan, open_store, open_backend, open_scorer, log, progress
    )
    default_tb = plan.search.balance_temperature if plan.search is not None else None
    for tb in balance:
        if tb == default_tb and width in plan.search_budgets.get(REBASE, []):
            continue  # the REBASE store at that width is this one
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
            lambda name, tb=tb: ResultStore(store_path(out_dir, balance_store(width, tb))),
            open_backend,
            open_scorer,
            log,
            progress,
        )
    order = {p.id: i for i, p in enumerate(problems)}
    ids = set(order)

    def read(name: str, wanted: set[str] = ids) -> list[dict]:
        return _ordered(open_store(name), wanted, order)

    scores: list[QuestionScore] = []
    pool_strategies = [s for s in plan.strategies if STRATEGIES[s].kind == "pool"]
    if pool_strategies:
        pool = read(pool_store(pool_size))
        prm_scores = read(pool_prm_store(pool_size))
        for strategy in pool_strategies:
            scores += vote_scores(
                pool,
                strategy,
                plan.budgets,
                plan.cost,
                plan.paper_params,
                plan.sampling.seed,
                prm_scores,
                plan.aggregation,
                plan.prm_cost,
            )
    for strategy, budgets in plan.search_budgets.items():
        for budget in budgets:
            scores += tree_scores(read(tree_store(strategy, budget), search_ids), strategy, budget)
    swept: dict[float, list[QuestionScore]] = {}
    for tb in balance:
        if tb == default_tb and width in plan.search_budgets.get(REBASE, []):
            records = read(tree_store(REBASE, width), search_ids)
        else:
            store = ResultStore(store_path(out_dir, balance_store(width, tb)))
            records = _ordered(store, search_ids, order)
        swept[tb] = tree_scores(records, REBASE, width)
    return {"scores": scores, "balance": swept}


def _ordered(store: ResultStore, wanted: set[str], order: dict[str, int]) -> list[dict]:
    """The store's records of the `wanted` questions in the questions' order, all of them."""
    records = [r for r in store.read() if r["id"] in wanted]
    if len(records) != len(wanted):
        raise IncompleteResults(
            f"{store.path} holds {len(records)} of its {len(wanted)} questions; run the study "
            "again to compute the missing ones"
        )
    return sorted(records, key=lambda r: order[r["id"]])


def _base_stores(plan: EvaluationPlan, base_dir: Path) -> list[str]:
    """The stores the experiment's evaluation of the plan's strategies wrote."""
    stores = planned_stores(plan.strategies, plan.budgets[-1], plan.search_budgets, 0, 0)
    return [name for name in stores if name not in (GREEDY_STORE, pool_store(plan.budgets[-1]))]


def heldout_metrics(
    scorer: Scorer, records: list[StepLabelled], modulus: int, answer_phrase: str
) -> dict:
    """A PRM's held-out step metrics against the rollout labels (as the trained PRM's summary
    has them) and against exact step validity, and how often the rollout labels agree with
    exact validity."""
    scores = scorer.score([(r.question, r.steps) for r in records])
    metrics = evaluate_step_scores(
        [r.question_id for r in records],
        [r.hard_labels for r in records],
        [r.final_correct for r in records],
        scores,
        [r.answer is not None for r in records],
    )
    exact = [
        valid
        for r in records
        for valid in prefix_validity(r.question, r.steps, modulus, answer_phrase)
    ]
    flat = [x for steps in scores for x in steps]
    rollout = [label for r in records for label in r.hard_labels]
    return {
        **metrics,
        "auc_rollout": roc_auc(rollout, flat),
        "auc_exact": roc_auc(exact, flat),
        "exact_positive_steps": sum(exact),
        "label_agreement": label_agreement(records, modulus, answer_phrase),
    }
