"""Evaluate one policy: greedy decoding, a pool of N samples per question (majority vote,
weighted vote, best-of-n) and the tree searches (REBASE, MCTS, beam search), graded and stored
per question, then accuracy and FLOPs per strategy and budget.

Generation goes through the backend interface in chunks of whole questions; each chunk's records
are appended to its result store as soon as it finishes, so a killed run resumes where it was.
Every voting budget n <= N is scored from the one pool (expected accuracy over random subsets);
each tree-search budget is a search of its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from inferscale.compute import (
    ModelCost,
    forward_flops,
    generation_flops,
    pool_flops,
    pool_scoring_flops,
)
from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.generation.base import Backend, Completion, Request
from inferscale.grading import answer_classes, extract_answer, is_equivalent
from inferscale.progress import Advance, Progress, no_progress
from inferscale.results import ResultStore
from inferscale.scaling.subsets import QuestionPool, pass_at_k, question_accuracies
from inferscale.scores import PoolRecord, QuestionScore, points_over
from inferscale.search.mcts import CHILDREN_BELOW_ROOT, root_children
from inferscale.search.registry import STRATEGIES
from inferscale.search.searches import SEARCHES
from inferscale.search.tree import Aggregation, Scorer, SearchResult, SearchSettings, aggregate
from inferscale.search.voting import weighted_vote
from inferscale.seeds import derived_seed

# A point's question set: every evaluated question, or the ones the tree searches ran on.
ALL = "all"
SEARCHED = "searched"
GREEDY_STORE = "greedy"


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int  # sequences per backend call
    seed: int


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def generate_pending(
    problems: list[Problem],
    store: ResultStore,
    backend: Backend,
    request_for: Callable[[Problem], Request],
    record_for: Callable[[Problem, Completion], dict],
    sequences_per_question: int,
    batch_size: int,
    advance: Advance | None = None,
) -> int:
    """Generate and store records for the problems not yet in the store; returns how many
    (`advance` counts each stored question)."""
    done = store.done_ids()
    pending = [p for p in problems if p.id not in done]
    per_chunk = max(1, batch_size // sequences_per_question)
    for chunk in _chunks(pending, per_chunk):
        completions = backend.generate([request_for(p) for p in chunk])
        store.append([record_for(p, c) for p, c in zip(chunk, completions, strict=True)])
        if advance is not None:
            advance(len(chunk))
    return len(pending)


def grade_samples(problem: Problem, completion: Completion, fmt: StepFormat) -> dict:
    answers = [extract_answer(s.text, fmt.answer_phrase, fmt.tag) for s in completion.samples]
    classes = answer_classes(answers)
    correct = _correct_classes(classes, answers, problem.answer)
    return {
        "id": problem.id,
        "level": problem.level,
        "gold": problem.answer,
        "prompt_tokens": completion.prompt_tokens,
        "samples": [
            {"text": s.text, "answer": a, "tokens": s.num_tokens, "finish": s.finish_reason}
            for s, a in zip(completion.samples, answers, strict=True)
        ],
        "classes": classes,
        "correct_classes": correct,
    }


def run_samples(
    problems,
    store,
    backend,
    fmt: StepFormat,
    settings: SamplingSettings,
    n: int,
    greedy: bool,
    advance: Advance | None = None,
) -> int:
    """n samples per question (greedy: the one argmax decode), graded and stored."""

    def request_for(p: Problem) -> Request:
        return Request(
            prompt=fmt.prompt(p.question),
            n=n,
            temperature=0.0 if greedy else settings.temperature,
            top_p=1.0 if greedy else settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            seed=derived_seed(settings.seed, p.id),
        )

    return generate_pending(
        problems,
        store,
        backend,
        request_for,
        lambda p, c: grade_samples(p, c, fmt),
        n,
        settings.batch_size,
        advance,
    )


def greedy_scores(records: list[dict], cost: ModelCost, paper_params: str) -> list[QuestionScore]:
    scores = []
    for r in records:
        tokens = [s["tokens"] for s in r["samples"]]
        right = float(bool(r["correct_classes"]))
        scores.append(
            QuestionScore(
                id=r["id"],
                level=r["level"],
                strategy="greedy",
                budget=1,
                accuracy=right,
                coverage=right,
                flops_paper=pool_flops(cost, r["prompt_tokens"], tokens, 1, "paper", paper_params),
                flops_full=pool_flops(cost, r["prompt_tokens"], tokens, 1, "full"),
                tokens=tokens[0],
            )
        )
    return scores


def vote_scores(
    records: list[dict],
    strategy: str,
    budgets: list[int],
    cost: ModelCost,
    paper_params: str,
    seed: int,
    prm_scores: list[dict] | None = None,
    aggregation: Aggregation = "last",
    prm_cost: ModelCost | None = None,
) -> list[QuestionScore]:
    """Each question's expected accuracy, pass@n and FLOPs of one vote at every budget n over
    its pool; `prm_scores` (the PRM's step scores per sample, in record order) are needed by
    the weighted vote and best-of-n."""
    vote = STRATEGIES[strategy].vote
    if vote == "majority":
        pools = [QuestionPool(r["classes"], r["correct_classes"]) for r in records]
    else:
        if prm_scores is None or prm_cost is None:
            raise ValueError(f"{strategy} needs the PRM's scores of the pool")
        pools = [
            QuestionPool(
                r["classes"],
                r["correct_classes"],
                [solution_score(steps, aggregation) for steps in s["step_scores"]],
            )
            for r, s in zip(records, prm_scores, strict=True)
        ]
    # Seeded by question id, so a question's Monte Carlo subsets do not depend on which other
    # questions are scored with it.
    seeds = [derived_seed(seed, r["id"]) for r in records]
    pool_records = [PoolRecord.from_json(r) for r in records]
    scores = []
    for n in budgets:
        accuracies = question_accuracies(pools, n, vote, seeds)  # type: ignore[arg-type]
        for i, (record, accuracy) in enumerate(zip(pool_records, accuracies, strict=True)):
            tokens = record.sample_tokens
            full = pool_flops(cost, record.prompt_tokens, tokens, n, "full")
            if prm_scores is not None and vote != "majority":
                # In full accounting only: the PRM reads the drawn samples.
                steps = [len(steps) for steps in prm_scores[i]["step_scores"]]
                full += pool_scoring_flops(prm_cost, record.prompt_tokens, tokens, steps, n)
            scores.append(
                QuestionScore(
                    id=record.id,
                    level=record.level,
                    strategy=strategy,
                    budget=n,
                    accuracy=float(accuracy),
                    coverage=pass_at_k(record.size, record.correct, n),
                    flops_paper=pool_flops(
                        cost, record.prompt_tokens, tokens, n, "paper", paper_params
                    ),
                    flops_full=full,
                    tokens=n * statistics.fmean(tokens),
                )
            )
    return scores


def solution_score(step_scores: list[float], aggregation: Aggregation) -> float:
    """A sample's score; a sample with no step (an empty solution) scores 0."""
    return aggregate(step_scores, aggregation) if step_scores else 0.0


def score_pool(
    problems: list[Problem],
    records: dict[str, dict],
    store: ResultStore,
    scorer: Scorer,
    fmt: StepFormat,
    batch_size: int,
    advance: Advance | None = None,
) -> int:
    """The PRM's step scores of every pool sample not yet scored, stored per question."""
    done = store.done_ids()
    pending = [p for p in problems if p.id not in done]
    per_chunk = (
        max(1, batch_size // max(1, len(records[pending[0].id]["samples"]))) if pending else 1
    )
    for chunk in _chunks(pending, per_chunk):
        items, owners = [], []
        for p in chunk:
            for k, sample in enumerate(records[p.id]["samples"]):
                steps = fmt.split_steps(sample["text"])
                if steps:
                    items.append((p.question, steps))
                    owners.append((p.id, k))
        step_scores = scorer.score(items) if items else []
        by_sample = dict(zip(owners, step_scores, strict=True))
        store.append(
            [
                {
                    "id": p.id,
                    "step_scores": [
                        [float(x) for x in by_sample.get((p.id, k), [])]
                        for k in range(len(records[p.id]["samples"]))
                    ],
                }
                for p in chunk
            ]
        )
        if advance is not None:
            advance(len(chunk))
    return len(pending)


def tree_record(
    problem: Problem,
    result: SearchResult,
    fmt: StepFormat,
    aggregation: Aggregation,
    cost: ModelCost,
    prm_cost: ModelCost,
    paper_params: str,
) -> dict:
    """One question's search, graded: its solutions, the weighted vote's choice, and FLOPs."""
    texts = [result.solution_text(i) for i in result.solutions]
    answers = [extract_answer(t, fmt.answer_phrase, fmt.tag) for t in texts]
    classes = answer_classes(answers)
    step_scores = [result.step_scores(i) for i in result.solutions]
    scores = [solution_score(s, aggregation) for s in step_scores]
    correct = _correct_classes(classes, answers, problem.answer)
    chosen = weighted_vote(classes, scores)
    generated = [n.num_tokens for n in result.nodes[1:]]
    policy_full = forward_flops(cost, result.prompt_tokens) + sum(
        forward_flops(cost, n.num_tokens, n.context_tokens, n.num_tokens) for n in result.nodes[1:]
    )
    # The PRM's scorer keeps the KV of what it read: the prompt once, then each scored node's
    # step on top of its parent's (counted once, should a node be scored again), read at the
    # step's tag.
    prm_full = forward_flops(prm_cost, result.prompt_tokens) + sum(
        forward_flops(
            prm_cost,
            result.nodes[i].num_tokens,
            result.nodes[i].context_tokens,
            min(1, result.nodes[i].num_tokens),
        )
        for i in dict.fromkeys(result.scored_nodes)
    )
    return {
        "id": problem.id,
        "level": problem.level,
        "gold": problem.answer,
        "prompt_tokens": result.prompt_tokens,
        "solutions": [
            {"text": t, "answer": a, "step_scores": s}
            for t, a, s in zip(texts, answers, step_scores, strict=True)
        ],
        "classes": classes,
        "correct_classes": correct,
        "chosen": chosen,
        "correct": chosen is not None and chosen in correct,
        "nodes": len(result.nodes) - 1,
        "tokens": sum(generated),
        "flops_paper": generation_flops(
            cost, result.prompt_tokens, generated, "paper", paper_params
        ),
        "flops_full": policy_full + prm_full,
    }


def run_tree_search(
    problems: list[Problem],
    store: ResultStore,
    strategy: str,
    budget: int,
    backend: Backend,
    scorer: Scorer,
    settings: SearchSettings,
    questions_per_call: int,
    record_for: Callable[[Problem, SearchResult], dict],
    advance: Advance | None = None,
) -> int:
    """Search every question not yet in the store, a chunk of questions at a time."""
    done = store.done_ids()
    pending = [p for p in problems if p.id not in done]
    search = SEARCHES[strategy]
    for chunk in _chunks(pending, questions_per_call):
        results = search(chunk, backend, scorer, budget, settings)
        store.append([record_for(p, r) for p, r in zip(chunk, results, strict=True)])
        if advance is not None:
            advance(len(chunk))
    return len(pending)


def round_width(strategy: str, budget: int) -> int:
    """The most sequences one question asks of the backend in one round of a tree search."""
    if strategy == "mcts":
        return max(root_children(budget), CHILDREN_BELOW_ROOT)
    return budget


def tree_scores(records: list[dict], strategy: str, budget: int) -> list[QuestionScore]:
    return [
        QuestionScore(
            id=r["id"],
            level=r["level"],
            strategy=strategy,
            budget=budget,
            accuracy=float(r["correct"]),
            coverage=float(bool(r["correct_classes"])),
            flops_paper=r["flops_paper"],
            flops_full=r["flops_full"],
            tokens=r["tokens"],
        )
        for r in records
    ]


def _correct_classes(classes: list[int | None], answers: list[str | None], gold: str) -> list[int]:
    representatives: dict[int, str] = {}
    for cls, answer in zip(classes, answers, strict=True):
        if cls is not None:
            representatives.setdefault(cls, answer)
    return sorted(c for c, a in representatives.items() if is_equivalent(a, gold))


def accuracy_by_level(records: list[dict]) -> dict[str, float]:
    levels: dict[str, list[float]] = {}
    for r in records:
        levels.setdefault(str(r["level"]), []).append(float(bool(r["correct_classes"])))
    return {k: statistics.fmean(v) for k, v in sorted(levels.items())}


def store_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.jsonl"


def tree_store(strategy: str, budget: int) -> str:
    """The store of one tree search's records at one budget."""
    return f"{strategy}-b{budget}"


def pool_store(pool_size: int) -> str:
    """The store of each question's pool of samples."""
    return f"samples-n{pool_size}"


def pool_prm_store(pool_size: int) -> str:
    """The store of the PRM's step scores of each pool sample."""
    return f"{pool_store(pool_size)}-prm"


def planned_stores(
    strategies: list[str],
    pool_size: int,
    search_budgets: dict[str, list[int]],
    questions: int,
    searched: int,
) -> dict[str, int]:
    """Each store an evaluation writes, with the questions it holds once done (`searched`: the
    tree searches' share of the `questions`)."""
    kinds = [STRATEGIES[s].kind for s in strategies]
    stores = {GREEDY_STORE: questions} if "greedy" in strategies else {}
    if "pool" in kinds:
        stores[pool_store(pool_size)] = questions
    if any(STRATEGIES[s].kind == "pool" and STRATEGIES[s].needs_prm for s in strategies):
        stores[pool_prm_store(pool_size)] = questions
    for strategy in strategies:
        if STRATEGIES[strategy].kind == "tree":
            stores.update({tree_store(strategy, b): searched for b in search_budgets[strategy]})
    return stores


def read_pools(directory: Path, pool_size: int) -> list[PoolRecord]:
    """An evaluation's pools, one record per question."""
    store = ResultStore(store_path(directory, pool_store(pool_size)))
    return [PoolRecord.from_json(r) for r in store.read()]


def read_pool_prm_scores(directory: Path, pool_size: int) -> dict[str, list[list[float]]]:
    """The PRM's step scores of every pool sample, by question id (empty without a PRM)."""
    store = ResultStore(store_path(directory, pool_prm_store(pool_size)))
    return {r["id"]: r["step_scores"] for r in store.read()}


@dataclass(frozen=True)
class EvaluationPlan:
    """What to evaluate for one policy, and the costs its FLOPs are counted with."""

    fmt: StepFormat
    strategies: list[str]
    budgets: list[int]  # pool sizes scored for the votes; the largest is the pool
    sampling: SamplingSettings
    cost: ModelCost
    paper_params: str = "total"
    aggregation: Aggregation = "last"
    search: SearchSettings | None = None
    search_budgets: dict[str, list[int]] = field(default_factory=dict)
    search_limit: int | None = None  # tree searches run on the first questions only
    prm_cost: ModelCost | None = None


class IncompleteResults(RuntimeError):
    pass


def searched_ids(problems: list[Problem], plan: EvaluationPlan) -> set[str]:
    """The questions the tree searches run on: the first `search_limit` of the evaluation's."""
    return {p.id for p in problems[: plan.search_limit]}


def evaluate_policy(
    problems: list[Problem],
    out_dir: Path,
    plan: EvaluationPlan,
    open_backend: Callable[[], Backend],
    open_scorer: Callable[[], Scorer] | None = None,
    log: Callable[[str], None] = print,
    progress: Progress = no_progress,
) -> dict:
    """Generate what is missing from out_dir's stores, then score every strategy and budget:
    {"scores": one QuestionScore per (question, strategy, budget), "points": their means per
    question set, "greedy_accuracy_by_level": ...}.

    The backend and the scorer are opened only if something is left for them to do; each
    store's questions are counted by a `progress(store, total, done)` of its own.
    """
    search_ids = searched_ids(problems, plan)

    def open_store(name: str) -> ResultStore:
        return ResultStore(store_path(out_dir, name))

    generate_missing(
        problems, search_ids, plan, open_store, open_backend, open_scorer, log, progress
    )
    return score_stores(problems, search_ids, open_store, plan)


def _kinds(plan: EvaluationPlan) -> tuple[list[str], list[str], bool]:
    """The plan's pool strategies, its tree searches, and whether the pool needs PRM scores."""
    pool = [s for s in plan.strategies if STRATEGIES[s].kind == "pool"]
    tree = [s for s in plan.strategies if STRATEGIES[s].kind == "tree"]
    return pool, tree, any(STRATEGIES[s].needs_prm for s in pool)


def ordered_records(store: ResultStore, wanted: set[str], order: dict[str, int]) -> list[dict]:
    """The store's records of the `wanted` questions, in the questions' order (so a question
    done again after damage counts as in an uninterrupted run), all of them."""
    records = [r for r in store.read() if r["id"] in wanted]
    if len(records) != len(wanted):
        raise IncompleteResults(
            f"{store.path} holds {len(records)} of its {len(wanted)} questions after generation; "
            "run the stage again to generate the missing ones"
        )
    return sorted(records, key=lambda r: order[r["id"]])


def generate_missing(
    problems: list[Problem],
    search_ids: set[str],
    plan: EvaluationPlan,
    open_store: Callable[[str], ResultStore],
    open_backend: Callable[[], Backend],
    open_scorer: Callable[[], Scorer] | None = None,
    log: Callable[[str], None] = print,
    progress: Progress = no_progress,
) -> dict[str, dict[str, int]]:
    """Generate, score and search what the stores (`open_store(name)`) lack for `problems`, the
    tree searches on those in `search_ids` only; returns, per store, the questions it already
    held ("written") and those generated now ("generated")."""
    pool_strategies, tree_strategies, needs_scores = _kinds(plan)
    if (needs_scores or tree_strategies) and (open_scorer is None or plan.prm_cost is None):
        raise ValueError(f"strategies {plan.strategies} need a PRM scorer and its cost")
    if tree_strategies and plan.search is None:
        raise ValueError(f"tree searches {tree_strategies} need search settings")
    pool_size = plan.budgets[-1]
    # (store name, samples per question, greedy?)
    jobs = [(GREEDY_STORE, 1, True)] if "greedy" in plan.strategies else []
    if pool_strategies:
        jobs.append((pool_store(pool_size), pool_size, False))
    ids = {p.id for p in problems}
    search_problems = [p for p in problems if p.id in search_ids]
    order = {p.id: i for i, p in enumerate(problems)}
    opened: dict[str, object] = {}
    counts: dict[str, dict[str, int]] = {}

    def backend() -> Backend:
        if "backend" not in opened:
            opened["backend"] = open_backend()
        return opened["backend"]  # type: ignore[return-value]

    def scorer() -> Scorer:
        if "scorer" not in opened:
            opened["scorer"] = open_scorer()  # type: ignore[misc]
        return opened["scorer"]  # type: ignore[return-value]

    def pending(name: str, store: ResultStore, questions: list[Problem]) -> int:
        written = len(store.done_ids() & {p.id for p in questions})
        counts[name] = {"written": written, "generated": len(questions) - written}
        return len(questions) - written

    try:
        for name, n, greedy in jobs:
            store = open_store(name)
            todo = pending(name, store, problems)
            if todo:
                log(
                    f"{name}: {todo} questions to generate ({len(problems) - todo} already written)"
                )
                model = backend()
                with progress(name, len(problems), len(problems) - todo) as advance:
                    run_samples(problems, store, model, plan.fmt, plan.sampling, n, greedy, advance)
        if needs_scores:
            name = pool_prm_store(pool_size)
            store = open_store(name)
            todo = pending(name, store, problems)
            if todo:
                log(f"{pool_store(pool_size)}: {todo} questions' samples to score with the PRM")
                pool = ordered_records(open_store(pool_store(pool_size)), ids, order)
                records = {r["id"]: r for r in pool}
                with progress(name, len(problems), len(problems) - todo) as advance:
                    batch_size = plan.sampling.batch_size
                    score_pool(problems, records, store, scorer(), plan.fmt, batch_size, advance)
        for strategy in tree_strategies:
            for budget in plan.search_budgets[strategy]:
                name = tree_store(strategy, budget)
                store = open_store(name)
                todo = pending(name, store, search_problems)
                if not todo:
                    continue
                log(f"{name}: {todo} questions to search")
                searched = len(search_problems)
                with progress(name, searched, searched - todo) as advance:
                    run_tree_search(
                        search_problems,
                        store,
                        strategy,
                        budget,
                        backend(),
                        scorer(),
                        plan.search,  # type: ignore[arg-type]
                        max(1, plan.sampling.batch_size // round_width(strategy, budget)),
                        lambda p, r: tree_record(
                            p,
                            r,
                            plan.fmt,
                            plan.aggregation,
                            plan.cost,
                            plan.prm_cost,
                            plan.paper_params,  # type: ignore[arg-type]
                        ),
                        advance,
                    )
    finally:
        for thing in opened.values():
            thing.close()  # type: ignore[attr-defined]
    return counts


def score_stores(
    problems: list[Problem],
    search_ids: set[str],
    open_store: Callable[[str], ResultStore],
    plan: EvaluationPlan,
) -> dict:
    """Every strategy's and budget's scores and points from the complete stores
    (`open_store(name)`)."""
    pool_strategies, tree_strategies, needs_scores = _kinds(plan)
    pool_size = plan.budgets[-1]
    ids = {p.id for p in problems}
    order = {p.id: i for i, p in enumerate(problems)}

    def read(name: str, wanted: set[str] = ids) -> list[dict]:
        return ordered_records(open_store(name), wanted, order)

    scores: list[QuestionScore] = []
    result: dict = {}
    if "greedy" in plan.strategies:
        records = read(GREEDY_STORE)
        scores += greedy_scores(records, plan.cost, plan.paper_params)
        result["greedy_accuracy_by_level"] = accuracy_by_level(records)
    if pool_strategies:
        records = read(pool_store(pool_size))
        prm_scores = None
        if needs_scores:
            by_id = {r["id"]: r for r in read(pool_prm_store(pool_size))}
            prm_scores = [by_id[r["id"]] for r in records]
        for strategy in pool_strategies:
            scores += vote_scores(
                records,
                strategy,
                plan.budgets,
                plan.cost,
                plan.paper_params,
                plan.sampling.seed,
                prm_scores,
                plan.aggregation,
                plan.prm_cost,
            )
    for strategy in tree_strategies:
        for budget in plan.search_budgets[strategy]:
            scores += tree_scores(read(tree_store(strategy, budget), search_ids), strategy, budget)
    # Tree searches on fewer questions than the pools: greedy and the votes are also averaged
    # over the searched questions alone, so that strategies are compared on one set.
    points = points_over(scores, ids, ALL)
    if tree_strategies and search_ids != ids:
        points += points_over(scores, search_ids, SEARCHED)
    return {"scores": scores, "points": points, **result}
