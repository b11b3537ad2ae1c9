"""evaluate_policy with a scripted backend: what is stored, what is resumed, what is scored."""

from __future__ import annotations

import pytest

from inferscale.compute import ModelCost
from inferscale.data.records import Problem
from inferscale.data.steps import StepFormat
from inferscale.evaluation import EvaluationPlan, SamplingSettings, evaluate_policy, store_path
from inferscale.generation.base import Completion, Request, Sample
from inferscale.results import ResultStore

FMT = StepFormat()
PROBLEMS = [Problem(id=f"q{i}", question=f"{i} + 1", answer=str(i + 1), level=1) for i in range(6)]
GOLD = {FMT.prompt(p.question): p.answer for p in PROBLEMS}
COST = ModelCost(non_embedding=1000, total=1200, n_layer=2, d_model=16)
SETTINGS = SamplingSettings(max_new_tokens=20, temperature=0.8, top_p=1.0, batch_size=8, seed=3)


class ScriptedBackend:
    """Greedy answers right on even questions; sample i of a request is right unless
    (seed + i) % 3 == 0, in which case it answers 0. Each answer costs 5 tokens."""

    name = "scripted"

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def generate(self, requests: list[Request]) -> list[Completion]:
        self.requests += requests
        out = []
        for r in requests:
            gold = GOLD[r.prompt]
            samples = []
            for i in range(r.n):
                greedy_right = int(gold) % 2 == 1  # the question's index is even
                right = greedy_right if r.temperature == 0 else (r.seed + i) % 3 != 0
                text = FMT.solution([FMT.answer_text(gold if right else "0")])
                samples.append(Sample(text=text, num_tokens=5, finish_reason="eos"))
            out.append(Completion(prompt_tokens=4, samples=samples))
        return out

    def close(self) -> None:
        pass


PLAN = EvaluationPlan(
    fmt=FMT, strategies=["greedy", "majority_vote"], budgets=[1, 2, 4], sampling=SETTINGS, cost=COST
)


def run(tmp_path, backend, problems=PROBLEMS, open_backend=None):
    return evaluate_policy(
        problems, tmp_path, PLAN, open_backend=open_backend or (lambda: backend), log=lambda _: None
    )


def test_stores_every_question_and_scores_every_budget(tmp_path):
    backend = ScriptedBackend()
    scores = run(tmp_path, backend)
    points = scores["points"]
    greedy = ResultStore(store_path(tmp_path, "greedy")).read()
    pool = ResultStore(store_path(tmp_path, "samples-n4")).read()
    assert [r["id"] for r in greedy] == [p.id for p in PROBLEMS]
    assert all(len(r["samples"]) == 4 for r in pool)
    by_key = {(p.strategy, p.budget): p for p in points}
    assert set(by_key) == {
        ("greedy", 1),
        ("majority_vote", 1),
        ("majority_vote", 2),
        ("majority_vote", 4),
    }
    assert by_key["greedy", 1].accuracy == pytest.approx(0.5)
    assert scores["greedy_accuracy_by_level"] == {"1": pytest.approx(0.5)}
    # At n = N the vote sees the whole pool: right unless the wrong answer has the majority.
    expected = []
    for r in pool:
        right = sum(1 for c in r["classes"] if c in r["correct_classes"])
        expected.append(1.0 if right > 2 else 0.0 if right < 2 else None)
    assert None not in expected  # the script leaves no tie at n = 4
    assert by_key["majority_vote", 4].accuracy == pytest.approx(sum(expected) / 6)
    # Paper FLOPs: n samples x 5 tokens x 2 x total parameters.
    for n in (1, 2, 4):
        assert by_key["majority_vote", n].flops_paper == pytest.approx(n * 5 * 2 * 1200)
    assert by_key["majority_vote", 4].coverage == pytest.approx(
        sum(1.0 for r in pool if r["correct_classes"]) / 6
    )


def test_resumes_only_the_missing_questions(tmp_path):
    first = ScriptedBackend()
    run(tmp_path, first, PROBLEMS[:4])
    written = (tmp_path / "samples-n4.jsonl").read_text()
    second = ScriptedBackend()
    points = run(tmp_path, second)["points"]
    assert sorted(r.prompt for r in second.requests) == sorted(
        FMT.prompt(p.question) for p in PROBLEMS[4:] for _ in ("greedy", "pool")
    )
    assert (tmp_path / "samples-n4.jsonl").read_text().startswith(written)
    assert {p.budget for p in points if p.strategy == "majority_vote"} == {1, 2, 4}


def test_a_finished_evaluation_does_not_open_the_backend(tmp_path):
    run(tmp_path, ScriptedBackend())

    def refuse():
        raise AssertionError("nothing is left to generate")

    again = run(tmp_path, None, open_backend=refuse)
    assert again == run(tmp_path, ScriptedBackend())


def test_a_damaged_line_is_done_again_and_scored_as_in_an_uninterrupted_run(tmp_path):
    clean = run(tmp_path / "clean", ScriptedBackend())
    run(tmp_path / "damaged", ScriptedBackend())
    pool = tmp_path / "damaged" / "samples-n4.jsonl"
    lines = pool.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"id": "q1", "sam' + b"\x00" * 20 + b"\n"  # damage in the middle of the file
    pool.write_bytes(b"".join(lines))
    again = ScriptedBackend()
    result = run(tmp_path / "damaged", again)
    assert [r.prompt for r in again.requests] == [FMT.prompt(PROBLEMS[1].question)]
    assert len(ResultStore(pool).read()) == len(PROBLEMS)
    assert result == clean


def test_scores_are_refused_when_a_store_misses_questions(tmp_path, monkeypatch):
    from inferscale.evaluation import IncompleteResults

    run(tmp_path, ScriptedBackend())
    pool = tmp_path / "samples-n4.jsonl"
    # A store that loses what is written to it (here: q3, hidden from reading but reported
    # done) must stop the stage, not be scored on the questions it kept.
    read = ResultStore.read
    monkeypatch.setattr(ResultStore, "done_ids", lambda self: {r["id"] for r in read(self)})
    monkeypatch.setattr(
        ResultStore,
        "read",
        lambda self: [r for r in read(self) if not (self.path == pool and r["id"] == "q3")],
    )
    with pytest.raises(IncompleteResults, match=r"samples-n4.jsonl holds 5 of its 6"):
        run(tmp_path, ScriptedBackend())


class CountedProgress:
    """A `progress` that records each bar: (what, total, done before it, advances)."""

    def __init__(self) -> None:
        self.bars: list[tuple[str, int, int, list[int]]] = []

    def __call__(self, what, total, done=0, unit="question"):
        from contextlib import nullcontext

        advances: list[int] = []
        self.bars.append((what, total, done, advances))
        return nullcontext(advances.append)


def test_progress_counts_each_stores_questions_from_what_was_written(tmp_path):
    first = CountedProgress()
    evaluate_policy(
        PROBLEMS[:4], tmp_path, PLAN, lambda: ScriptedBackend(), log=lambda _: None, progress=first
    )
    # batch_size 8: greedy 8 questions a call (4 here); the pool of 4 samples 2 a call.
    assert first.bars == [("greedy", 4, 0, [4]), ("samples-n4", 4, 0, [2, 2])]
    resumed = CountedProgress()
    evaluate_policy(
        PROBLEMS, tmp_path, PLAN, lambda: ScriptedBackend(), log=lambda _: None, progress=resumed
    )
    assert resumed.bars == [("greedy", 6, 4, [2]), ("samples-n4", 6, 4, [2])]
