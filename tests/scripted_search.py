"""A scripted policy and PRM for the tree-search tests: every step names its place in the tree.

Step d of a solution reads `Step d: s<path>`, where the path lists the sample index taken at each
depth from the root (`0`, then `0.1`, then `0.1.0`, ...), so a test can say which node did what
by its path. The backend reads the parent's path back from the prompt. `ending(question, path)`
decides how a step ends: None (an ordinary step, stopped at the tag), "answer" (it states the
answer, which is the question text), "eos" or "length" (no tag). A step costs `step_tokens(path)`
tokens and a prompt costs one token per whitespace-separated word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.generation.base import Completion, Request, Sample
from inferscale.search.tree import SearchResult, SearchSettings

FMT = StepFormat()

Ending = Callable[[str, str], str | None]


def settings(**overrides) -> SearchSettings:
    values = dict(fmt=FMT, temperature=0.7, top_p=0.9, max_step_tokens=12, max_depth=10, seed=5)
    values.update(overrides)
    return SearchSettings(**values)


def problems(*questions: str) -> list[Problem]:
    return [Problem(id=f"id-{q}", question=q, answer=q) for q in questions]


def step_tokens(path: str) -> int:
    """Tokens of the step at `path`: its depth plus its sample index plus one."""
    return path.count(".") + 1 + int(path.rsplit(".", 1)[-1]) + 1


def prompt_tokens(question: str) -> int:
    return len(FMT.prompt(question).split())


def step_path(step: str) -> str:
    """The path a step body (`s0.1 ...`, prefix and tag removed) names."""
    return step.split()[0].removeprefix("s")


def endings(table: Mapping[tuple[str, str], str]) -> Ending:
    """An `ending` from {(question, path): kind}; other steps are ordinary."""
    return lambda question, path: table.get((question, path))


class ScriptedBackend:
    name = "scripted"

    def __init__(self, ending: Ending | None = None) -> None:
        self.ending = ending or (lambda question, path: None)
        self.calls: list[list[Request]] = []

    def generate(self, requests: list[Request]) -> list[Completion]:
        self.calls.append(list(requests))
        completions = []
        for request in requests:
            question, parent = self._parse(request.prompt)
            samples = [self._step(question, parent, k) for k in range(request.n)]
            completions.append(
                Completion(prompt_tokens=len(request.prompt.split()), samples=samples)
            )
        return completions

    def close(self) -> None:
        pass

    @staticmethod
    def _parse(prompt: str) -> tuple[str, str]:
        head, _, solution = prompt.partition("\nAnswer:\n")
        steps = FMT.split_steps(solution)
        return head.removeprefix("Question: "), step_path(steps[-1]) if steps else ""

    def _step(self, question: str, parent: str, k: int) -> Sample:
        path = f"{parent}.{k}" if parent else str(k)
        depth = path.count(".") + 1
        text = f"{'' if depth == 1 else chr(10)}Step {depth}: s{path}"
        tokens = step_tokens(path)
        ending = self.ending(question, path)
        if ending is None:
            return Sample(text + FMT.tag, tokens, "stop")
        if ending == "answer":
            return Sample(f"{text} {FMT.answer_text(question)}{FMT.tag}", tokens, "stop")
        if ending == "eos":
            return Sample(text, tokens, "eos")
        if ending == "length":
            return Sample(text + " and then", tokens, "length")
        raise ValueError(f"unknown ending {ending!r}")


class ScriptedScorer:
    """Scores each step by `score_of(question, path)`; records every call."""

    def __init__(self, score_of: Callable[[str, str], float] | None = None) -> None:
        self.score_of = score_of or (lambda question, path: 0.5)
        self.calls: list[list[tuple[str, list[str]]]] = []

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        self.calls.append([(q, list(steps)) for q, steps in items])
        return [[self.score_of(q, step_path(s)) for s in steps] for q, steps in items]

    def close(self) -> None:
        pass


def scores(table: Mapping[str, float], default: float = 0.5) -> Callable[[str, str], float]:
    """A `score_of` from {path: score} for every question."""
    return lambda question, path: table.get(path, default)


def path_of(result: SearchResult, i: int) -> str:
    """The path label of node i of a scripted search ("" for the root)."""
    return step_path(result.steps(i)[-1]) if i else ""


def paths(result: SearchResult, nodes: Sequence[int]) -> list[str]:
    return [path_of(result, i) for i in nodes]


def expanded(call: Sequence[Request]) -> list[tuple[str, str, int]]:
    """(question, parent path, n) of each request of one backend call."""
    out = []
    for request in call:
        question, parent = ScriptedBackend._parse(request.prompt)
        out.append((question, parent, request.n))
    return out
