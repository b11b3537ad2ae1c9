"""Evaluate one policy: greedy decoding, a pool of N samples per question (majority vote,
weighted vote, best-of-n) and the tree searches (REBASE, MCTS, beam search), graded and stored
per question, then accuracy and FLOPs per strategy and budget.

Generation goes through the backend interface in chunks of whole questions; each chunk's records
are appended to its result store as soon as it finishes, so a killed run resumes where it was.
Every voting budget n <= N is scored from the one pool (expected accuracy over random subsets);
each tree-search budget is a search of its own.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from inferscale.compute import ModelCost, forward_flops, generation_flops
from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.generation.base import Backend, Completion, Request
from inferscale.grading import answer_classes, extract_answer, is_equivalent
from inferscale.results import ResultStore
from inferscale.scaling.subsets import QuestionPool, accuracy_curve, pass_at_k
from inferscale.search.mcts import CHILDREN_BELOW_ROOT, root_children
from inferscale.search.registry import TREE_STRATEGIES
from inferscale.search.tree import Aggregation, Scorer, SearchResult, SearchSettings, aggregate
from inferscale.search.voting import weighted_vote

VOTES = {"majority_vote": "majority", "weighted_vote": "weighted", "best_of_n": "best_of_n"}
# A point's question set: every evaluated question, or the ones the tree searches ran on.
ALL = "all"
SEARCHED = "searched"


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int  # sequences per backend call
    seed: int


def sample_seed(base: int, question_id: str) -> int:
    """A seed per question, independent of its position, so resumed runs sample the same."""
    digest = hashlib.sha256(f"{base}:{question_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x3FFFFFFF


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
) -> int:
    """Generate and store records for the problems not yet in the store; returns how many."""
    done = store.done_ids()
    pending = [p for p in problems if p.id not in done]
    per_chunk = max(1, batch_size // sequences_per_question)
    for chunk in _chunks(pending, per_chunk):
        completions = backend.generate([request_for(p) for p in chunk])
        store.append([record_for(p, c) for p, c in zip(chunk, completions, strict=True)])
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
    problems, store, backend, fmt: StepFormat, settings: SamplingSettings, n: int, greedy: bool
) -> int:
    """n samples per question (greedy: the one argmax decode), graded and stored."""

    def request_for(p: Problem) -> Request:
        return Request(
            prompt=fmt.prompt(p.question),
            n=n,
            temperature=0.0 if greedy else settings.temperature,
            top_p=1.0 if greedy else settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            seed=sample_seed(settings.seed, p.id),
        )

    return generate_pending(
        problems,
        store,
        backend,
        request_for,
        lambda p, c: grade_samples(p, c, fmt),
        n,
        settings.batch_size,
    )


def _mean_and_stderr(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return mean, stderr


def _pool_flops(cost: ModelCost, record: dict, n: int, paper_params: str) -> tuple[float, float]:
    """Expected FLOPs of n samples drawn from the record's pool: (paper, full)."""
    tokens = [s["tokens"] for s in record["samples"]]
    share = n / len(tokens)
    paper = share * generation_flops(cost, record["prompt_tokens"], tokens, "paper", paper_params)
    return paper, _shared_prompt_flops(cost, record["prompt_tokens"], tokens, share)


def _shared_prompt_flops(cost: ModelCost, prompt: int, tokens: list[int], share: float) -> float:
    """Full FLOPs of reading the prompt once and `share` of the samples after it."""
    prefill = forward_flops(cost, prompt)
    return prefill + share * (generation_flops(cost, prompt, tokens, "full") - prefill)


def greedy_point(records: list[dict], cost: ModelCost, paper_params: str) -> dict:
    correct = [float(bool(r["correct_classes"])) for r in records]
    accuracy, stderr = _mean_and_stderr(correct)
    flops = [_pool_flops(cost, r, 1, paper_params) for r in records]
    return {
        "strategy": "greedy",
        "budget": 1,
        "accuracy": accuracy,
        "stderr": stderr,
        "coverage": accuracy,
        "flops_paper": statistics.fmean(f[0] for f in flops),
        "flops_full": statistics.fmean(f[1] for f in flops),
        "tokens": statistics.fmean(r["samples"][0]["tokens"] for r in records),
    }


def vote_points(
    records: list[dict],
    strategy: str,
    budgets: list[int],
    cost: ModelCost,
    paper_params: str,
    seed: int,
    scores: list[dict] | None = None,
    aggregation: Aggregation = "last",
    prm_cost: ModelCost | None = None,
) -> list[dict]:
    """Points of one vote over the pools; `scores` (the PRM's step scores per sample, in record
    order) are needed by the weighted vote and best-of-n."""
    if VOTES[strategy] == "majority":
        pools = [QuestionPool(r["classes"], r["correct_classes"]) for r in records]
    else:
        if scores is None or prm_cost is None:
            raise ValueError(f"{strategy} needs the PRM's scores of the pool")
        pools = [
            QuestionPool(
                r["classes"],
                r["correct_classes"],
                [solution_score(steps, aggregation) for steps in s["step_scores"]],
            )
            for r, s in zip(records, scores, strict=True)
        ]
    curve = accuracy_curve(pools, budgets, vote=VOTES[strategy], seed=seed)
    points = []
    for row in curve:
        n = row["n"]
        flops = [_pool_flops(cost, r, n, paper_params) for r in records]
        if pools[0].scores is not None:
            # In full accounting only: the PRM reads the prompt once (its scorer keeps the KV)
            # and each drawn sample after it.
            flops = [
                (paper, full + _pool_scoring_flops(prm_cost, r, n))
                for (paper, full), r in zip(flops, records, strict=True)
            ]
        coverage = statistics.fmean(pass_at_k(len(r["samples"]), _n_correct(r), n) for r in records)
        points.append(
            {
                "strategy": strategy,
                "budget": n,
                "accuracy": row["accuracy"],
                "stderr": row["stderr"],
                "coverage": coverage,
                "flops_paper": statistics.fmean(f[0] for f in flops),
                "flops_full": statistics.fmean(f[1] for f in flops),
                "tokens": n * statistics.fmean(s["tokens"] for r in records for s in r["samples"]),
            }
        )
    return points


def solution_score(step_scores: list[float], aggregation: Aggregation) -> float:
    """A sample's score; a sample with no step (an empty solution) scores 0."""
    return aggregate(step_scores, aggregation) if step_scores else 0.0


def _pool_scoring_flops(prm_cost: ModelCost, record: dict, n: int) -> float:
    tokens = [s["tokens"] for s in record["samples"]]
    return _shared_prompt_flops(prm_cost, record["prompt_tokens"], tokens, n / len(tokens))


def score_pool(
    problems: list[Problem],
    records: dict[str, dict],
    store: ResultStore,
    scorer: Scorer,
    fmt: StepFormat,
    batch_size: int,
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
        forward_flops(cost, n.num_tokens, n.context_tokens) for n in result.nodes[1:]
    )
    # The PRM's scorer keeps the KV of what it read: the prompt once, then each scored node's
    # step on top of its parent's (counted once, should a node be scored again).
    prm_full = forward_flops(prm_cost, result.prompt_tokens) + sum(
        forward_flops(prm_cost, result.nodes[i].num_tokens, result.nodes[i].context_tokens)
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
) -> int:
    """Search every question not yet in the store, a chunk of questions at a time."""
    done = store.done_ids()
    pending = [p for p in problems if p.id not in done]
    search = TREE_STRATEGIES[strategy]
    for chunk in _chunks(pending, questions_per_call):
        results = search(chunk, backend, scorer, budget, settings)
        store.append([record_for(p, r) for p, r in zip(chunk, results, strict=True)])
    return len(pending)


def round_width(strategy: str, budget: int) -> int:
    """The most sequences one question asks of the backend in one round of a tree search."""
    if strategy == "mcts":
        return max(root_children(budget), CHILDREN_BELOW_ROOT)
    return budget


def tree_point(records: list[dict], strategy: str, budget: int) -> dict:
    accuracy, stderr = _mean_and_stderr([float(r["correct"]) for r in records])
    return {
        "strategy": strategy,
        "budget": budget,
        "accuracy": accuracy,
        "stderr": stderr,
        "coverage": statistics.fmean(float(bool(r["correct_classes"])) for r in records),
        "flops_paper": statistics.fmean(r["flops_paper"] for r in records),
        "flops_full": statistics.fmean(r["flops_full"] for r in records),
        "tokens": statistics.fmean(r["tokens"] for r in records),
    }


def _correct_classes(classes: list[int | None], answers: list[str | None], gold: str) -> list[int]:
    representatives: dict[int, str] = {}
    for cls, answer in zip(classes, answers, strict=True):
        if cls is not None:
            representatives.setdefault(cls, answer)
    return sorted(c for c, a in representatives.items() if is_equivalent(a, gold))


def _n_correct(record: dict) -> int:
    correct = set(record["correct_classes"])
    return sum(1 for c in record["classes"] if c in correct)


def accuracy_by_level(records: list[dict]) -> dict[str, float]:
    levels: dict[str, list[float]] = {}
    for r in records:
        levels.setdefault(str(r["level"]), []).append(float(bool(r["correct_classes"])))
    return {k: statistics.fmean(v) for k, v in sorted(levels.items())}


def store_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.jsonl"


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


def evaluate_policy(
    problems: list[Problem],
    out_dir: Path,
    plan: EvaluationPlan,
    open_backend: Callable[[], Backend],
    open_scorer: Callable[[], Scorer] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Generate what is missing from out_dir's stores, then score every strategy and budget:
    {"points": one row per (strategy, budget), "greedy_accuracy_by_level": ...}.

    The backend and the scorer are opened only if something is left for them to do.
    """
    pool_strategies = [s for s in plan.strategies if s in VOTES]
    tree_strategies = [s for s in plan.strategies if s in TREE_STRATEGIES]
    needs_scores = any(VOTES[s] != "majority" for s in pool_strategies)
    if (needs_scores or tree_strategies) and (open_scorer is None or plan.prm_cost is None):
        raise ValueError(f"strategies {plan.strategies} need a PRM scorer and its cost")
    if tree_strategies and plan.search is None:
        raise ValueError(f"tree searches {tree_strategies} need search settings")
    pool_name = f"samples-n{plan.budgets[-1]}"
    # (store name, samples per question, greedy?)
    jobs = [("greedy", 1, True)] if "greedy" in plan.strategies else []
    if pool_strategies:
        jobs.append((pool_name, plan.budgets[-1], False))
    ids = {p.id for p in problems}
    search_problems = problems[: plan.search_limit]
    search_ids = {p.id for p in search_problems}
    opened: dict[str, object] = {}

    def backend() -> Backend:
        if "backend" not in opened:
            opened["backend"] = open_backend()
        return opened["backend"]  # type: ignore[return-value]

    def scorer() -> Scorer:
        if "scorer" not in opened:
            opened["scorer"] = open_scorer()  # type: ignore[misc]
        return opened["scorer"]  # type: ignore[return-value]

    def read(name: str, wanted: set[str] = ids) -> list[dict]:
        return [r for r in ResultStore(store_path(out_dir, name)).read() if r["id"] in wanted]

    try:
        for name, n, greedy in jobs:
            store = ResultStore(store_path(out_dir, name))
            todo = len(problems) - len(store.done_ids() & ids)
            if todo:
                log(
                    f"{name}: {todo} questions to generate ({len(problems) - todo} already written)"
                )
                run_samples(problems, store, backend(), plan.fmt, plan.sampling, n, greedy)
        if needs_scores:
            store = ResultStore(store_path(out_dir, f"{pool_name}-prm"))
            todo = len(problems) - len(store.done_ids() & ids)
            if todo:
                log(f"{pool_name}: {todo} questions' samples to score with the PRM")
                records = {r["id"]: r for r in read(pool_name)}
                score_pool(problems, records, store, scorer(), plan.fmt, plan.sampling.batch_size)
        for strategy in tree_strategies:
            for budget in plan.search_budgets[strategy]:
                name = f"{strategy}-b{budget}"
                store = ResultStore(store_path(out_dir, name))
                todo = len(search_problems) - len(store.done_ids() & search_ids)
                if not todo:
                    continue
                log(f"{name}: {todo} questions to search")
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
                )
    finally:
        for thing in opened.values():
            thing.close()  # type: ignore[attr-defined]

    # Tree searches on fewer questions than the pools: the greedy and vote points are also
    # scored on the searched questions alone, so that strategies are compared on one set.
    subsets = {ALL: ids}
    if tree_strategies and search_ids != ids:
        subsets[SEARCHED] = search_ids
    result: dict = {"points": []}
    for subset, wanted in subsets.items():
        points = []
        if "greedy" in plan.strategies:
            records = read("greedy", wanted)
            points.append(greedy_point(records, plan.cost, plan.paper_params))
            if subset == ALL:
                result["greedy_accuracy_by_level"] = accuracy_by_level(records)
        if pool_strategies:
            records = read(pool_name, wanted)
            scores = None
            if needs_scores:
                by_id = {r["id"]: r for r in read(f"{pool_name}-prm", wanted)}
                scores = [by_id[r["id"]] for r in records]
            for strategy in pool_strategies:
                points += vote_points(
                    records,
                    strategy,
                    plan.budgets,
                    plan.cost,
                    plan.paper_params,
                    plan.sampling.seed,
                    scores,
                    plan.aggregation,
                    plan.prm_cost,
                )
        result["points"] += [
            {**p, "question_set": subset, "questions": len(wanted)} for p in points
        ]
    tree_set = SEARCHED if SEARCHED in subsets else ALL
    for strategy in tree_strategies:
        for budget in plan.search_budgets[strategy]:
            records = read(f"{strategy}-b{budget}", search_ids)
            point = tree_point(records, strategy, budget)
            result["points"].append(
                {**point, "question_set": tree_set, "questions": len(search_ids)}
            )
    return result
