"""What the tree-search strategies (REBASE, MCTS, beam search) share: their settings, the search
tree of one question, and batched expansion and scoring.

A strategy works on a batch of questions in rounds. Each round makes one backend call with the
requests of every question in the batch and one scorer call with every node the round made, so
the backend batches across questions instead of running one small batch per question.

Node 0 of a tree is the root, the question itself, with no text. Every other node is one step as
the policy generated it (stop string included), so a node's solution is the concatenation of the
step texts from the root down to it. A node's score is the PRM's score of its last step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.generation.base import Backend, FinishReason, Request
from inferscale.grading import extract_answer
from inferscale.seeds import derived_seed

Aggregation = Literal["last", "min", "prod", "mean"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


@dataclass(frozen=True)
class SearchSettings:
    fmt: StepFormat
    temperature: float
    top_p: float
    max_step_tokens: int
    max_depth: int  # in steps; a node at this depth is finished
    seed: int
    aggregation: Aggregation = "last"
    balance_temperature: float = 0.2  # REBASE Tb: 0.1 in the paper, 0.2 in the official code
    exploration: float = 1.0  # MCTS C
    beam_width: int = 4  # beam search M

    def __post_init__(self) -> None:
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {self.max_depth}")
        if self.max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be at least 1, got {self.max_step_tokens}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if not self.balance_temperature > 0:
            raise ValueError(
                f"balance_temperature must be positive, got {self.balance_temperature}"
            )
        if self.exploration < 0:
            raise ValueError(f"exploration must not be negative, got {self.exploration}")
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {self.beam_width}")


class Scorer(Protocol):
    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """For each (question, steps so far): one score in [0, 1] per step, the PRM's
        probability that the step is correct."""
        ...

    def close(self) -> None:
        """Free the model's memory."""
        ...


def aggregate(step_scores: Sequence[float], how: Aggregation) -> float:
    """One score for a solution from its step scores."""
    if not step_scores:
        raise ValueError("cannot aggregate the step scores of a solution with no steps")
    if how == "last":
        return step_scores[-1]
    if how == "min":
        return min(step_scores)
    if how == "prod":
        return math.prod(step_scores)
    if how == "mean":
        return math.fsum(step_scores) / len(step_scores)
    raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")


@dataclass
class Node:
    parent: int | None  # None for the root
    text: str  # the step as generated, stop string included; "" for the root
    num_tokens: int  # generated tokens of this step
    depth: int  # steps from the root; the root is 0
    finish_reason: FinishReason | None  # None for the root
    context_tokens: int  # prompt + ancestors' step tokens: what this step's generation attended to
    score: float | None = None  # the PRM's score of this node's last step
    finished: bool = False


@dataclass
class SearchResult:
    question_id: str
    question: str
    fmt: StepFormat
    nodes: list[Node]  # the whole tree; node 0 is the root
    solutions: list[int] = field(default_factory=list)  # finished nodes for the vote, in order
    prompt_tokens: int = 0  # tokens of the question's prompt
    scored_nodes: list[int] = field(default_factory=list)  # one entry per node the PRM scored

    def path(self, i: int) -> list[int]:
        """Node indices from the root's child down to node i (the root left out)."""
        path = []
        node: int | None = i
        while node is not None and node != 0:
            path.append(node)
            node = self.nodes[node].parent
        return path[::-1]

    def solution_text(self, i: int) -> str:
        return "".join(self.nodes[j].text for j in self.path(i))

    def steps(self, i: int) -> list[str]:
        return self.fmt.split_steps(self.solution_text(i))

    def step_scores(self, i: int) -> list[float]:
        """The scores of the nodes from the root's child down to node i, one per step."""
        scores = [self.nodes[j].score for j in self.path(i)]
        if any(s is None for s in scores):
            raise ValueError(f"node {i} of question {self.question_id} has unscored steps")
        return scores  # type: ignore[return-value]

    def solution_score(self, i: int, how: Aggregation) -> float:
        return aggregate(self.step_scores(i), how)

    @property
    def generated_tokens(self) -> int:
        return sum(node.num_tokens for node in self.nodes)


def new_search(problem: Problem, fmt: StepFormat) -> SearchResult:
    """A tree holding only the root."""
    root = Node(parent=None, text="", num_tokens=0, depth=0, finish_reason=None, context_tokens=0)
    return SearchResult(question_id=problem.id, question=problem.question, fmt=fmt, nodes=[root])


def is_finished(
    text: str, finish_reason: FinishReason, depth: int, settings: SearchSettings
) -> bool:
    """A step ends its solution when it gives an answer, the policy stopped (eos) or was cut
    (length), or the tree is as deep as allowed."""
    fmt = settings.fmt
    return (
        extract_answer(text, fmt.answer_phrase, fmt.tag) is not None
        or finish_reason in ("eos", "length")
        or depth >= settings.max_depth
    )


def expand(
    searches: Sequence[SearchResult],
    expansions: Sequence[tuple[int, int, int]],
    backend: Backend,
    settings: SearchSettings,
) -> list[tuple[int, int]]:
    """Generate `n` children of each (search index, node index, n) in one backend call.

    Returns the new nodes as (search index, node index), in request order then sample order.
    Expanding a root also records the question's prompt tokens.
    """
    expansions = [(q, i, n) for q, i, n in expansions if n > 0]
    if not expansions:
        return []
    fmt = settings.fmt
    requests = [
        Request(
            prompt=fmt.prompt(searches[q].question) + searches[q].solution_text(i),
            n=n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_step_tokens,
            stop=(fmt.tag,),
            # a seed per node: one shared seed would make vLLM draw the same samples for all
            seed=derived_seed(settings.seed, searches[q].question_id, i),
        )
        for q, i, n in expansions
    ]
    completions = backend.generate(requests)
    if len(completions) != len(requests):
        raise ValueError(f"backend answered {len(completions)} of {len(requests)} requests")
    new = []
    for (q, i, n), completion in zip(expansions, completions, strict=True):
        if len(completion.samples) != n:
            raise ValueError(f"backend returned {len(completion.samples)} samples, asked for {n}")
        search = searches[q]
        parent = search.nodes[i]
        if i == 0:
            search.prompt_tokens = completion.prompt_tokens
            parent.context_tokens = completion.prompt_tokens
        for sample in completion.samples:
            depth = parent.depth + 1
            search.nodes.append(
                Node(
                    parent=i,
                    text=sample.text,
                    num_tokens=sample.num_tokens,
                    depth=depth,
                    finish_reason=sample.finish_reason,
                    context_tokens=parent.context_tokens + parent.num_tokens,
                    finished=is_finished(sample.text, sample.finish_reason, depth, settings),
                )
            )
            new.append((q, len(search.nodes) - 1))
    return new


def score_nodes(
    searches: Sequence[SearchResult], nodes: Sequence[tuple[int, int]], scorer: Scorer
) -> None:
    """Set the score of each (search index, node index) with one scorer call."""
    items, targets = [], []
    for q, i in nodes:
        search = searches[q]
        steps = search.steps(i)
        if steps:
            items.append((search.question, steps))
            targets.append((q, i))
        else:
            # Only an empty first step has no steps; the PRM cannot read it and it has no answer.
            search.nodes[i].score = 0.0
    if not items:
        return
    scores = scorer.score(items)
    if len(scores) != len(items):
        raise ValueError(f"scorer answered {len(scores)} of {len(items)} items")
    for (q, i), step_scores in zip(targets, scores, strict=True):
        if not step_scores:
            raise ValueError("scorer returned no step scores for a solution with steps")
        searches[q].nodes[i].score = float(step_scores[-1])
        searches[q].scored_nodes.append(i)


def require_scorer(scorer: Scorer | None, strategy: str) -> Scorer:
    if scorer is None:
        raise ValueError(f"{strategy} needs a PRM scorer, got None")
    return scorer


def check_budget(budget: int, strategy: str) -> None:
    if budget < 1:
        raise ValueError(f"{strategy} needs a budget of at least 1, got {budget}")
