"""What an evaluation hands to analysis, typed: each question's score for every strategy and
budget, the points (means over a set of questions) they average to, a pool record as analysis
reads it, and the evaluation's metrics file."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from inferscale.compute import ModelCost

METRICS_FILE = "metrics.json"
SCORES_FILE = "question_scores.jsonl"


@dataclass(frozen=True)
class QuestionScore:
    """One question under one strategy at one budget. For a vote over the pool, `accuracy`,
    `coverage` (pass@budget) and the costs are expectations over random subsets of the pool."""

    id: str
    level: int | None
    strategy: str
    budget: int
    accuracy: float
    coverage: float
    flops_paper: float
    flops_full: float
    tokens: float


@dataclass(frozen=True)
class Point:
    """A strategy at one budget, averaged over a set of questions; `stderr` is the standard
    error of the accuracy over those questions."""

    strategy: str
    budget: int
    question_set: str
    questions: int
    accuracy: float
    stderr: float
    coverage: float
    flops_paper: float
    flops_full: float
    tokens: float

    @property
    def error_rate(self) -> float:
        return 1.0 - self.accuracy

    def flops(self, accounting: str) -> float:
        return self.flops_full if accounting == "full" else self.flops_paper


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, stderr


def aggregate(scores: Iterable[QuestionScore], question_set: str) -> list[Point]:
    """One point per (strategy, budget) of `scores`, in the order they first appear."""
    groups: dict[tuple[str, int], list[QuestionScore]] = {}
    for s in scores:
        groups.setdefault((s.strategy, s.budget), []).append(s)
    points = []
    for (strategy, budget), group in groups.items():
        accuracy, stderr = mean_and_stderr([s.accuracy for s in group])
        points.append(
            Point(
                strategy=strategy,
                budget=budget,
                question_set=question_set,
                questions=len(group),
                accuracy=accuracy,
                stderr=stderr,
                coverage=statistics.fmean(s.coverage for s in group),
                flops_paper=statistics.fmean(s.flops_paper for s in group),
                flops_full=statistics.fmean(s.flops_full for s in group),
                tokens=statistics.fmean(s.tokens for s in group),
            )
        )
    return points


def points_over(scores: Sequence[QuestionScore], ids: set[str], question_set: str) -> list[Point]:
    """The points of every (strategy, budget) that scored each of `ids`, averaged over them."""
    seen: dict[tuple[str, int], set[str]] = {}
    for s in scores:
        seen.setdefault((s.strategy, s.budget), set()).add(s.id)
    complete = {key for key, done in seen.items() if ids <= done}
    return aggregate(
        (s for s in scores if s.id in ids and (s.strategy, s.budget) in complete), question_set
    )


@dataclass(frozen=True)
class PoolRecord:
    """One question's pool of samples as analysis reads it: the answer class of each sample
    (None: no answer), which classes are right, and what each sample cost in tokens."""

    id: str
    level: int | None
    prompt_tokens: int
    sample_tokens: list[int]
    classes: list[int | None]
    correct_classes: list[int]

    @classmethod
    def from_json(cls, record: dict) -> PoolRecord:
        return cls(
            id=record["id"],
            level=record.get("level"),
            prompt_tokens=record["prompt_tokens"],
            sample_tokens=[s["tokens"] for s in record["samples"]],
            classes=record["classes"],
            correct_classes=record["correct_classes"],
        )

    @property
    def size(self) -> int:
        return len(self.classes)

    @property
    def correct(self) -> int:
        """How many samples are right."""
        right = set(self.correct_classes)
        return sum(1 for c in self.classes if c in right)


@dataclass(frozen=True)
class EvaluationMetrics:
    """An evaluation's `metrics.json`: the policy's size and cost model, and its points."""

    policy: str
    params: int
    parameters: dict[str, int]
    cost: ModelCost
    paper_params: str
    questions: int
    seconds: float
    points: list[Point]
    greedy_accuracy_by_level: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> EvaluationMetrics:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["cost"] = ModelCost(**data["cost"])
        values["points"] = [Point(**p) for p in data["points"]]
        return cls(**values)


def write_evaluation(
    directory: Path, metrics: EvaluationMetrics, scores: Sequence[QuestionScore]
) -> None:
    """An evaluation's metrics and per-question scores, each file written whole or not at all."""
    for name, text in (
        (SCORES_FILE, "".join(json.dumps(asdict(s)) + "\n" for s in scores)),
        (METRICS_FILE, json.dumps(metrics.to_json(), indent=2)),
    ):
        tmp = directory / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(directory / name)


def read_metrics(directory: Path) -> EvaluationMetrics:
    return EvaluationMetrics.from_json(json.loads((directory / METRICS_FILE).read_text()))


def read_scores(directory: Path) -> list[QuestionScore]:
    with (directory / SCORES_FILE).open() as f:
        return [QuestionScore(**json.loads(line)) for line in f if line.strip()]
