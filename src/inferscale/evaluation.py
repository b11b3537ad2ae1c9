"""Evaluate one policy: greedy decoding and a pool of N samples per question, graded and stored
per question, then accuracy and FLOPs per strategy and budget.

Generation goes through the backend interface in chunks of whole questions; each chunk's records
are appended to the result store as soon as it finishes, so a killed run resumes where it was.
Every voting budget n <= N is scored from the one pool (expected accuracy over random subsets).
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from inferscale.compute import ModelCost, forward_flops, generation_flops
from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.generation.base import Backend, Completion, Request
from inferscale.grading import answer_classes, extract_answer, is_equivalent
from inferscale.results import ResultStore
from inferscale.scaling.subsets import QuestionPool, accuracy_curve, pass_at_k

VOTES = {"majority_vote": "majority"}


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
    representatives: dict[int, str] = {}
    for cls, answer in zip(classes, answers, strict=True):
        if cls is not None:
            representatives.setdefault(cls, answer)
    correct = sorted(c for c, a in representatives.items() if is_equivalent(a, problem.answer))
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
    prefill = forward_flops(cost, record["prompt_tokens"])
    full = generation_flops(cost, record["prompt_tokens"], tokens, "full")
    return paper, prefill + share * (full - prefill)


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
) -> list[dict]:
    pools = [QuestionPool(r["classes"], r["correct_classes"]) for r in records]
    curve = accuracy_curve(pools, budgets, vote=VOTES[strategy], seed=seed)
    points = []
    for row in curve:
        n = row["n"]
        flops = [_pool_flops(cost, r, n, paper_params) for r in records]
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


def evaluate_policy(
    problems: list[Problem],
    out_dir: Path,
    fmt: StepFormat,
    settings: SamplingSettings,
    strategies: list[str],
    budgets: list[int],
    cost: ModelCost,
    paper_params: str,
    open_backend: Callable[[], Backend],
    log: Callable[[str], None] = print,
) -> dict:
    """Generate what is missing from out_dir's stores, then score every strategy and budget:
    {"points": one row per (strategy, budget), "greedy_accuracy_by_level": ...}.

    The backend is opened only if something is left to generate.
    """
    voting = [s for s in strategies if s != "greedy"]
    # (store name, samples per question, greedy?)
    jobs = [("greedy", 1, True)] if "greedy" in strategies else []
    if voting:
        jobs.append((f"samples-n{budgets[-1]}", budgets[-1], False))
    ids = {p.id for p in problems}
    backend = None
    try:
        for name, n, greedy in jobs:
            store = ResultStore(store_path(out_dir, name))
            done = len(store.done_ids() & ids)
            if done == len(problems):
                continue
            log(f"{name}: {len(problems) - done} questions to generate ({done} already written)")
            backend = backend or open_backend()
            run_samples(problems, store, backend, fmt, settings, n, greedy)
    finally:
        if backend is not None:
            backend.close()

    result: dict = {"points": []}
    for name, _, greedy in jobs:
        records = [r for r in ResultStore(store_path(out_dir, name)).read() if r["id"] in ids]
        if greedy:
            result["points"].append(greedy_point(records, cost, paper_params))
            result["greedy_accuracy_by_level"] = accuracy_by_level(records)
        else:
            for strategy in voting:
                result["points"] += vote_points(
                    records, strategy, budgets, cost, paper_params, settings.seed
                )
    return result
