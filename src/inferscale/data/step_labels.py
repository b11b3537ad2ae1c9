"""Step labels for PRM training, made Math-Shepherd's way: by completing each step prefix.

For a sampled solution with steps s_1..s_K, step k < K is labelled by `rollouts_per_step`
completions of the prompt followed by s_1..s_k: its soft label is the share of completions that
reach a correct answer, its hard label whether any does (Math-Shepherd's "hard estimation"). The
last step states the solution's own answer, so its label is that answer's correctness, with no
rollouts. Upstream Math-Shepherd rows carry hard labels only; `from_math_shepherd` maps them to
the same records so both scales train on one format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from inferscale.data.records import Problem, read_records, write_records
from inferscale.data.steps import StepFormat
from inferscale.generation.base import Backend, Completion, Request
from inferscale.grading import extract_answer, is_equivalent
from inferscale.progress import Advance, Progress, no_progress
from inferscale.results import ResultStore
from inferscale.seeds import derived_seed

if TYPE_CHECKING:  # the adapters import `datasets`, which the PRM's processes do not need
    from inferscale.data.adapters import LabelledSolution

Equivalence = Callable[[str | None, str], bool]


@dataclass(frozen=True)
class StepLabelled:
    """One solution with a label per step (soft in [0, 1], hard = any rollout correct)."""

    question_id: str
    question: str
    steps: list[str]  # step texts, no `Step k:` prefix, no tag
    soft_labels: list[float]
    hard_labels: list[bool]
    final_correct: bool
    answer: str | None = None  # the solution's own final answer


@dataclass(frozen=True)
class _Prefix:
    """Steps 1..k of solution `solution` of problem `problem`, to be completed by rollouts."""

    problem: int
    solution: int
    k: int


def label_solutions(
    problems: Sequence[Problem],
    backend: Backend,
    fmt: StepFormat,
    samples_per_question: int,
    rollouts_per_step: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    *,
    rollout_temperature: float,
    equivalent: Equivalence = is_equivalent,
    batch_size: int | None = None,
    completer: Backend | None = None,
    completer_fmt: StepFormat | None = None,
    validity: Callable[[str, Sequence[str]], list[bool]] | None = None,
    progress: Progress = no_progress,
) -> list[StepLabelled]:
    """Sample solutions from the policy and label each step by rollouts from its prefix, or,
    given the task's exact `validity` (one flag per prefix), by that, with no rollouts.

    The rollouts come from `completer` when given (Math-Shepherd's completer: a model good
    enough to finish a right prefix, so that a right step is seldom labelled wrong), else from
    the policy itself, at `rollout_temperature` (0: greedy); a completer prompted otherwise than
    the policy (its own chat template) reads its prompts from `completer_fmt`. The backends are
    called twice over (solutions, then every rollout of every prefix of every solution, each
    distinct prefix once when greedy), each time with all requests at once, or in chunks of at
    most `batch_size` sequences when given.
    Every sampled sequence gets its own seed: the question's seed (from `seed` and the question
    id, so a question is labelled the same whatever its neighbours) plus a running offset.
    Solutions without any step are dropped. `progress` counts the questions whose solutions
    are sampled, then the rollout requests.
    """
    if samples_per_question < 1 or rollouts_per_step < 1:
        raise ValueError("samples_per_question and rollouts_per_step must be at least 1")
    base_seeds = [derived_seed(seed, p.id) for p in problems]

    def request(prompt: str, n: int, seed: int, temperature: float) -> Request:
        return Request(
            prompt=prompt,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )

    solution_requests = [
        request(fmt.prompt(p.question), samples_per_question, base, temperature)
        for p, base in zip(problems, base_seeds, strict=True)
    ]
    with progress("solutions", len(solution_requests)) as advance:
        completions = _generate(backend, solution_requests, batch_size, advance)
    solutions = [[_solution_steps(sample.text, fmt) for sample in c.samples] for c in completions]
    if validity is not None:
        return _labelled(
            problems,
            solutions,
            fmt,
            equivalent,
            lambda i, j, steps, final_correct: [
                float(v) for v in validity(problems[i].question, steps)
            ],
        )

    rollout_fmt = completer_fmt or fmt
    prefixes: list[_Prefix] = []
    request_of: list[int] = []  # per prefix, the rollout request that completes it
    rollout_requests: list[Request] = []
    greedy_requests: dict[str, int] = {}
    for i, (p, base) in enumerate(zip(problems, base_seeds, strict=True)):
        next_seed = base + samples_per_question
        for j, steps in enumerate(solutions[i]):
            for k in range(1, len(steps)):
                prefixes.append(_Prefix(i, j, k))
                prompt = rollout_fmt.prompt(p.question) + fmt.solution(steps[:k])
                if rollout_temperature == 0 and prompt in greedy_requests:
                    # A greedy rollout depends on its prompt alone: samples that share a
                    # prefix (often their first steps, sometimes all) share its rollout.
                    request_of.append(greedy_requests[prompt])
                else:
                    if rollout_temperature == 0:
                        greedy_requests[prompt] = len(rollout_requests)
                    request_of.append(len(rollout_requests))
                    rollout_requests.append(
                        request(prompt, rollouts_per_step, next_seed, rollout_temperature)
                    )
                next_seed += rollouts_per_step
    with progress("rollouts", len(rollout_requests), unit="prefix") as advance:
        rollouts = _generate(completer or backend, rollout_requests, batch_size, advance)

    correct_share: dict[_Prefix, float] = {}
    for prefix, r in zip(prefixes, request_of, strict=True):
        completion = rollouts[r]
        gold = problems[prefix.problem].answer
        right = [
            _correct(extract_answer(s.text, fmt.answer_phrase, fmt.tag), gold, equivalent)
            for s in completion.samples
        ]
        correct_share[prefix] = sum(right) / len(right)

    def by_rollouts(i: int, j: int, steps: list[str], final_correct: bool) -> list[float]:
        soft = [correct_share[_Prefix(i, j, k)] for k in range(1, len(steps))]
        return [*soft, float(final_correct)]

    return _labelled(problems, solutions, fmt, equivalent, by_rollouts)


def _labelled(
    problems: Sequence[Problem],
    solutions: list[list[list[str]]],
    fmt: StepFormat,
    equivalent: Equivalence,
    labels: Callable[[int, int, list[str], bool], list[float]],
) -> list[StepLabelled]:
    """Every solution with steps, its soft labels from `labels(question index, solution index,
    steps, final_correct)`."""
    labelled = []
    for i, p in enumerate(problems):
        for j, steps in enumerate(solutions[i]):
            if not steps:
                continue
            answer = _final_answer(steps, fmt)
            final_correct = _correct(answer, p.answer, equivalent)
            soft = labels(i, j, steps, final_correct)
            labelled.append(
                StepLabelled(
                    question_id=p.id,
                    question=p.question,
                    steps=steps,
                    soft_labels=soft,
                    hard_labels=[s > 0 for s in soft],
                    final_correct=final_correct,
                    answer=answer,
                )
            )
    return labelled


def label_pending(
    problems: Sequence[Problem],
    store: ResultStore,
    label: Callable[[list[Problem]], list[StepLabelled]],
    questions_per_call: int,
    advance: Advance | None = None,
) -> dict[str, int]:
    """Label the problems the store (one record per question: its labelled solutions) does not
    hold yet, `questions_per_call` at a time, each call's questions stored as it returns;
    returns how many questions the store held and how many were labelled now."""
    done = store.done_ids()
    pending = [p for p in problems if p.id not in done]
    for i in range(0, len(pending), questions_per_call):
        chunk = pending[i : i + questions_per_call]
        solutions: dict[str, list[dict]] = {p.id: [] for p in chunk}
        for record in label(chunk):
            solutions[record.question_id].append(asdict(record))
        store.append([{"id": p.id, "solutions": solutions[p.id]} for p in chunk])
        if advance is not None:
            advance(len(chunk))
    return {"written": len(problems) - len(pending), "generated": len(pending)}


def stored_labels(store: ResultStore, problems: Sequence[Problem]) -> list[StepLabelled]:
    """Every problem's labelled solutions from the store, in the problems' order."""
    by_id = {r["id"]: r["solutions"] for r in store.read()}
    missing = [p.id for p in problems if p.id not in by_id]
    if missing:
        raise RuntimeError(
            f"{store.path} lacks the step labels of {len(missing)} question(s) (first "
            f"{missing[0]}); run the stage again to label them"
        )
    return [StepLabelled(**s) for p in problems for s in by_id[p.id]]


def _final_answer(steps: list[str], fmt: StepFormat) -> str | None:
    """The answer stated by the last step; None when the solution never states one."""
    if not fmt.is_final(steps[-1]):
        return None
    return extract_answer(steps[-1], fmt.answer_phrase, fmt.tag)


def _correct(answer: str | None, gold: str, equivalent: Equivalence) -> bool:
    return answer is not None and equivalent(answer, gold)


def _solution_steps(text: str, fmt: StepFormat) -> list[str]:
    """The steps of a sampled solution, up to and including its first answer step.

    Whatever a policy writes after stating its answer is not part of the solution it gave.
    A solution cut by the token limit keeps its unfinished last step, labelled by having no
    answer (incorrect).
    """
    steps = fmt.split_steps(text)
    for k, step in enumerate(steps):
        if fmt.is_final(step):
            return steps[: k + 1]
    return steps


def _generate(
    backend: Backend, requests: list[Request], batch_size: int | None, advance: Advance
) -> list[Completion]:
    completions: list[Completion] = []
    for chunk in _chunks_by_sequences(requests, batch_size):
        completions += backend.generate(chunk)
        advance(len(chunk))
    return completions


def _chunks_by_sequences(
    requests: list[Request], batch_size: int | None
) -> Iterator[list[Request]]:
    """Consecutive chunks of at most `batch_size` sequences (a larger request goes alone)."""
    if batch_size is None:
        if requests:
            yield requests
        return
    chunk: list[Request] = []
    size = 0
    for r in requests:
        if chunk and size + r.n > batch_size:
            yield chunk
            chunk, size = [], 0
        chunk.append(r)
        size += r.n
    if chunk:
        yield chunk


def from_math_shepherd(
    solutions: Sequence[LabelledSolution], fmt: StepFormat
) -> list[StepLabelled]:
    """Upstream Math-Shepherd solutions as step-labelled records (soft labels 0/1).

    Math-Shepherd gives no question ids; solutions of one question share an id derived from
    its text, so best-of-n evaluation can group them. The last step's label is the final
    answer's correctness, as in Math-Shepherd's own construction.
    """
    records = []
    for s in solutions:
        if not s.steps:
            continue
        if len(s.labels) != len(s.steps):
            raise ValueError(
                f"math_shepherd: {len(s.steps)} steps but {len(s.labels)} labels in the "
                f"solution of {s.question[:60]!r}"
            )
        digest = hashlib.sha256(s.question.encode()).hexdigest()[:16]
        records.append(
            StepLabelled(
                question_id=f"math_shepherd-{digest}",
                question=s.question,
                steps=list(s.steps),
                soft_labels=[float(label) for label in s.labels],
                hard_labels=list(s.labels),
                final_correct=bool(s.labels[-1]),
                answer=_final_answer(s.steps, fmt),
            )
        )
    return records


def write_step_labels(path: str | Path, records: Sequence[StepLabelled]) -> None:
    write_records(path, records)


def read_step_labels(path: str | Path) -> list[StepLabelled]:
    return read_records(path, StepLabelled)
