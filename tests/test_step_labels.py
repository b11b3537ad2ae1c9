"""Math-Shepherd-style step labelling with a scripted policy: exact labels, batching, seeds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from inferscale.data.adapters import LabelledSolution, load_step_labels
from inferscale.data.records import Problem
from inferscale.data.step_labels import (
    StepLabelled,
    from_math_shepherd,
    label_pending,
    label_solutions,
    read_step_labels,
    stored_labels,
    write_step_labels,
)
from inferscale.data.step_validity import exact_labels, validity_of
from inferscale.data.steps import StepFormat
from inferscale.generation.base import Completion, Request, Sample
from inferscale.results import ResultStore

FMT = StepFormat()
FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
PROBLEMS = [
    Problem(id="q0", question="2 + 3 + 1", answer="6"),
    Problem(id="q1", question="1 + 1", answer="2"),
]
# Sample i of a question's solution request; "" is an empty sample (dropped).
SOLUTIONS = {
    "2 + 3 + 1": [
        "Step 1: 2 + 3 = 5 ки\nStep 2: 5 + 1 = 6 ки\nStep 3: The answer is: 6 ки\n",
        "Step 1: 2 + 3 = 4 ки\nStep 2: 4 + 1 = 5 ки\nStep 3: The answer is: 5 ки\n",
        "Step 1: 2 + 3 = 5 ки\nStep 2: 5 + 1",  # cut by the token limit: no answer
        "Step 1: The answer is: 6 ки\nStep 2: 7 ки\n",  # goes on after its answer
        "",
    ],
    "1 + 1": ["Step 1: 1 + 1 = 2 ки\nStep 2: The answer is: 2 ки\n"] + [""] * 4,
}
# How many of a prefix's rollouts (by sample index) reach the right answer, by its last step.
RIGHT_ROLLOUTS = {"2 + 3 = 5": 3, "5 + 1 = 6": 4, "2 + 3 = 4": 1, "4 + 1 = 5": 0, "1 + 1 = 2": 2}
GOLD = {FMT.prompt(p.question): p.answer for p in PROBLEMS}


class ScriptedPolicy:
    """Solutions from SOLUTIONS; a rollout's sample i is right when i < RIGHT_ROLLOUTS[...]."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[list[Request]] = []

    def generate(self, requests: list[Request]) -> list[Completion]:
        self.calls.append(requests)
        return [Completion(prompt_tokens=3, samples=self._samples(r)) for r in requests]

    def _samples(self, r: Request) -> list[Sample]:
        prompt, _, prefix = r.prompt.partition("Answer:\n")
        question = prompt.removeprefix("Question: ").strip()
        if not prefix:
            return [Sample(SOLUTIONS[question][i], 9, "eos") for i in range(r.n)]
        gold = GOLD[prompt + "Answer:\n"]
        steps = FMT.split_steps(prefix)
        right = RIGHT_ROLLOUTS[steps[-1]]
        line = FMT.step_line(len(steps) + 1, "The answer is: {}")
        return [Sample(line.format(gold if i < right else "99"), 6, "eos") for i in range(r.n)]

    def close(self) -> None:
        pass


def label(policy, problems=PROBLEMS, batch_size=None, seed=7, **extra):
    return label_solutions(
        problems,
        policy,
        FMT,
        samples_per_question=5,
        rollouts_per_step=4,
        temperature=0.7,
        top_p=0.9,
        max_new_tokens=32,
        seed=seed,
        rollout_temperature=0.7,
        batch_size=batch_size,
        **extra,
    )


def test_labels_are_shares_of_correct_rollouts_and_the_last_step_is_the_answer():
    records = label(ScriptedPolicy())
    assert records == [
        StepLabelled("q0", "2 + 3 + 1", ["2 + 3 = 5", "5 + 1 = 6", "The answer is: 6"],
                     [0.75, 1.0, 1.0], [True, True, True], True, "6"),
        StepLabelled("q0", "2 + 3 + 1", ["2 + 3 = 4", "4 + 1 = 5", "The answer is: 5"],
                     [0.25, 0.0, 0.0], [True, False, False], False, "5"),
        StepLabelled("q0", "2 + 3 + 1", ["2 + 3 = 5", "5 + 1"],
                     [0.75, 0.0], [True, False], False, None),
        StepLabelled("q0", "2 + 3 + 1", ["The answer is: 6"], [1.0], [True], True, "6"),
        StepLabelled("q1", "1 + 1", ["1 + 1 = 2", "The answer is: 2"],
                     [0.5, 1.0], [True, True], True, "2"),
    ]  # fmt: skip


def test_all_rollouts_go_to_the_backend_in_one_call_with_distinct_seeds():
    policy = ScriptedPolicy()
    label(policy)
    solutions, rollouts = policy.calls
    assert [r.prompt for r in solutions] == [FMT.prompt(p.question) for p in PROBLEMS]
    assert all(r.n == 5 for r in solutions)
    # Every prefix of every non-empty solution but the whole: 2 + 2 + 1 (q0), 1 (q1).
    assert [r.prompt for r in rollouts] == [
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 5"]),
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 5", "5 + 1 = 6"]),
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 4"]),
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 4", "4 + 1 = 5"]),
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 5"]),
        FMT.prompt("1 + 1") + FMT.solution(["1 + 1 = 2"]),
    ]
    requests = solutions + rollouts
    assert {(r.n, r.temperature, r.top_p, r.max_new_tokens, r.stop) for r in rollouts} == {
        (4, 0.7, 0.9, 32, ())
    }
    sample_seeds = [r.seed + i for r in requests for i in range(r.n)]
    assert len(set(sample_seeds)) == len(sample_seeds) == 2 * 5 + 6 * 4


def test_a_completer_makes_the_rollouts_and_the_policy_only_the_solutions():
    policy, completer = ScriptedPolicy(), ScriptedPolicy()
    records = label_solutions(
        PROBLEMS, policy, FMT, 5, 4, 0.7, 0.9, 32, seed=7, rollout_temperature=0.7,
        completer=completer,
    )  # fmt: skip
    assert records == label(ScriptedPolicy())
    assert len(policy.calls) == 1 and all("Step" not in r.prompt for r in policy.calls[0])
    assert len(completer.calls) == 1 and all("Step 1:" in r.prompt for r in completer.calls[0])


class ChatCompleter(ScriptedPolicy):
    """A completer whose prompts are its own chat's: SCRIPTED's, wrapped in `<c>...</c>`."""

    def _samples(self, r: Request) -> list[Sample]:
        prompt, _, prefix = r.prompt.partition("</c>")
        assert prompt.startswith("<c>"), r.prompt
        return super()._samples(replace(r, prompt=prompt.removeprefix("<c>") + prefix))


def test_a_completer_prompted_otherwise_reads_its_own_prompts():
    policy, completer = ScriptedPolicy(), ChatCompleter()
    chat = replace(FMT, prompt_template="<c>" + FMT.prompt_template + "</c>")
    records = label_solutions(
        PROBLEMS, policy, FMT, 5, 4, 0.7, 0.9, 32, seed=7, rollout_temperature=0.7,
        completer=completer, completer_fmt=chat,
    )  # fmt: skip
    assert records == label(ScriptedPolicy())
    assert all(r.prompt.startswith("Question: ") for r in policy.calls[0])
    assert completer.calls[0][0].prompt == (
        "<c>Question: 2 + 3 + 1\nAnswer:\n</c>Step 1: 2 + 3 = 5 ки\n"
    )


def test_rollouts_take_their_own_temperature_and_solutions_keep_theirs():
    policy, completer = ScriptedPolicy(), ScriptedPolicy()
    label_solutions(
        PROBLEMS, policy, FMT, 5, 1, 0.7, 0.9, 32, seed=7, completer=completer,
        rollout_temperature=0.0,
    )  # fmt: skip
    assert {(r.n, r.temperature) for r in policy.calls[0]} == {(5, 0.7)}
    assert {(r.n, r.temperature) for r in completer.calls[0]} == {(1, 0.0)}


def test_greedy_rollouts_complete_each_distinct_prefix_once():
    completer = ScriptedPolicy()
    records = label_solutions(
        PROBLEMS, ScriptedPolicy(), FMT, 5, 1, 0.7, 0.9, 32, seed=7, completer=completer,
        rollout_temperature=0.0,
    )  # fmt: skip
    # Samples 0 and 2 of "2 + 3 + 1" share their first step: its one rollout labels both.
    assert [r.prompt for r in completer.calls[0]] == [
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 5"]),
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 5", "5 + 1 = 6"]),
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 4"]),
        FMT.prompt("2 + 3 + 1") + FMT.solution(["2 + 3 = 4", "4 + 1 = 5"]),
        FMT.prompt("1 + 1") + FMT.solution(["1 + 1 = 2"]),
    ]
    assert [r.soft_labels for r in records] == [
        [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0], [1.0], [1.0, 1.0]
    ]  # fmt: skip


def test_seeds_are_deterministic_and_do_not_depend_on_other_questions():
    first, again, alone, other_seed = (ScriptedPolicy() for _ in range(4))
    label(first)
    label(again)
    label(alone, problems=PROBLEMS[1:])
    label(other_seed, seed=8)
    seeds = [[r.seed for r in call] for call in first.calls]
    assert seeds == [[r.seed for r in call] for call in again.calls]
    q1_seeds = [r.seed for call in first.calls for r in call if "1 + 1" in r.prompt]
    assert q1_seeds == [r.seed for call in alone.calls for r in call]
    assert seeds != [[r.seed for r in call] for call in other_seed.calls]


def test_batch_size_chunks_calls_without_changing_labels():
    whole, chunked = ScriptedPolicy(), ScriptedPolicy()
    assert label(chunked, batch_size=9) == label(whole)
    # Solution requests (5 sequences each) one per call; rollouts (4 each) two per call.
    assert [[r.n for r in call] for call in chunked.calls] == [[5], [5], [4, 4], [4, 4], [4, 4]]
    flatten = [r for call in chunked.calls for r in call]
    assert flatten == [r for call in whole.calls for r in call]


def test_jsonl_round_trip(tmp_path):
    records = label(ScriptedPolicy())
    path = tmp_path / "labels" / "train.jsonl"
    write_step_labels(path, records)
    assert read_step_labels(path) == records
    assert len(path.read_text().splitlines()) == len(records)


def test_math_shepherd_rows_become_hard_labelled_records():
    upstream = load_step_labels(str(FIXTURES / "math_shepherd.jsonl"))
    records = from_math_shepherd(upstream, FMT)
    assert len(records) == len(upstream)
    for up, rec in zip(upstream, records):
        assert rec.question == up.question and rec.steps == up.steps
        assert rec.hard_labels == up.labels
        assert rec.soft_labels == [1.0 if y else 0.0 for y in up.labels]
        assert rec.final_correct == up.labels[-1]
    second = records[1]  # Tom's change: 100 - 51 written as 59, the last step marked `-`
    assert second.hard_labels == [True, True, False] and not second.final_correct
    assert second.answer == "59"
    assert second.question_id.startswith("math_shepherd-")
    same_question = LabelledSolution(upstream[1].question, ["The answer is: 49"], [True])
    assert from_math_shepherd([same_question], FMT)[0].question_id == second.question_id
    assert len({r.question_id for r in records}) == len({u.question for u in upstream})


def test_math_shepherd_labels_must_match_steps():
    with pytest.raises(ValueError, match="2 steps but 1 labels"):
        from_math_shepherd([LabelledSolution("q?", ["a", "The answer is: 1"], [True])], FMT)


def test_progress_counts_the_solution_requests_then_the_rollout_requests():
    from contextlib import nullcontext

    bars = []

    def progress(what, total, done=0, unit="question"):
        advances: list[int] = []
        bars.append((what, total, unit, advances))
        return nullcontext(advances.append)

    policy = ScriptedPolicy()
    label(policy, batch_size=8, progress=progress)
    solutions, rollouts = bars
    # 5 sequences a question and 4 a prefix, at most 8 a call: one question, two prefixes.
    assert [len(call) for call in policy.calls] == [1, 1, 2, 2, 2]
    assert solutions == ("solutions", 2, "question", [1, 1])
    assert rollouts == ("rollouts", 6, "prefix", [2, 2, 2])


def test_labels_gathered_per_question_resume_and_equal_one_call(tmp_path):
    whole = label(ScriptedPolicy())
    store = ResultStore(tmp_path / "labels-by-question.jsonl")
    calls: list[list[str]] = []

    def in_calls(problems):
        calls.append([p.id for p in problems])
        return label(ScriptedPolicy(), problems)

    # A first run labels q0 and dies; the next labels q1 alone.
    assert label_pending(PROBLEMS[:1], store, in_calls, 1) == {"written": 0, "generated": 1}
    assert label_pending(PROBLEMS, store, in_calls, 1) == {"written": 1, "generated": 1}
    assert calls == [["q0"], ["q1"]]
    assert stored_labels(store, PROBLEMS) == whole
    # Stored in another order, read back in the problems' order.
    again = ResultStore(tmp_path / "reversed.jsonl")
    label_pending(PROBLEMS[::-1], again, in_calls, 2)
    assert stored_labels(again, PROBLEMS) == whole


def test_labels_missing_a_question_are_refused(tmp_path):
    store = ResultStore(tmp_path / "labels-by-question.jsonl")
    label_pending(PROBLEMS[:1], store, lambda ps: label(ScriptedPolicy(), ps), 4)
    with pytest.raises(RuntimeError, match="lacks the step labels of 1 question"):
        stored_labels(store, PROBLEMS)


def test_exact_labels_need_no_rollouts_and_relabel_the_same_solutions():
    """With the task's validity, the policy samples the same solutions (same seeds) and each
    step is labelled by its prefix's exact validity: the rollout labels relabelled exactly."""
    validity = validity_of(modulus=37, answer_phrase=FMT.answer_phrase)
    policy = ScriptedPolicy()
    records = label(policy, validity=validity)
    (solutions,) = policy.calls  # one call: the solutions, and no rollout
    assert [(r.prompt, r.n, r.seed) for r in solutions] == [
        (r.prompt, r.n, r.seed) for r in label_requests()[0]
    ]
    assert [r.hard_labels for r in records] == [
        [True, True, True],
        [False, False, False],  # a slip, computed on
        [True, False],  # cut off: `5 + 1` is no step
        [False],  # an answer before any operation
        [True, True],
    ]
    assert all(r.soft_labels == [float(h) for h in r.hard_labels] for r in records)
    assert records == exact_labels(label(ScriptedPolicy()), 37, FMT.answer_phrase)


def label_requests() -> list[list[Request]]:
    policy = ScriptedPolicy()
    label(policy)
    return policy.calls
