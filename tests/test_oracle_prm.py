"""Oracle PRMs: the exact and noisy oracle's scores, their AUC, and reproducible searches."""

import dataclasses
import math
import random
from collections.abc import Sequence

import pytest
from scripted_search import settings

from inferscale.data.records import Problem
from inferscale.data.step_labels import StepLabelled
from inferscale.data.step_validity import prefix_validity, validity_of
from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import apply_operation, make_splits
from inferscale.data.synthetic_labels import corrupted
from inferscale.generation.base import Completion, Request, Sample
from inferscale.grading import extract_answer
from inferscale.models.oracle_prm import OracleScorer, oracle_scores, separation
from inferscale.models.prm_metrics import roc_auc, score_heldout
from inferscale.search.rebase import rebase
from inferscale.search.voting import weighted_vote

M = 37
FMT = StepFormat()
PHRASE = FMT.answer_phrase
STEPS = 5000


def solutions(problem: Problem, rng: random.Random) -> list[list[str]]:
    """A problem's right solution and wrong ones of the kinds policies write: a slip computed
    on, an answer before the last operation, a wrong last answer."""
    out = [problem.steps]
    computing = len(problem.steps) - 1
    out.append(corrupted(problem, rng.randrange(computing), rng, FMT))
    if computing > 1:
        j = rng.randrange(1, computing)
        out.append(problem.steps[:j] + [FMT.answer_text(problem.steps[j - 1].split()[-1])])
    out.append(problem.steps[:-1] + [FMT.answer_text(str((int(problem.answer) + 1) % M))])
    return out


def heldout_nodes(count: int = STEPS) -> list[tuple[str, list[str]]]:
    """`count` distinct prefixes (question, steps) of right and wrong held-out solutions."""
    _, test = make_splits(
        0, 900, [1, 2, 3, 4, 5], M, 4, PHRASE, 0.5, operations=("+", "-"), any_order=True
    )
    rng = random.Random(0)
    nodes: dict[tuple[str, tuple[str, ...]], None] = {}
    for p in test:
        for steps in solutions(p, rng):
            for k in range(1, len(steps) + 1):
                nodes[(p.question, tuple(steps[:k]))] = None
                if len(nodes) == count:
                    return [(q, list(s)) for q, s in nodes]
    raise AssertionError(f"only {len(nodes)} held-out steps")


def realized_auc(nodes: Sequence[tuple[str, list[str]]], auc: float, seed: int) -> float:
    scorer = OracleScorer(M, PHRASE, auc=auc, seed=seed)
    scores = [s[-1] for s in scorer.score(nodes)]
    valid = [prefix_validity(q, steps, M, PHRASE)[-1] for q, steps in nodes]
    return roc_auc(valid, scores)


@pytest.fixture(scope="module")
def nodes():
    return heldout_nodes()


def test_the_heldout_steps_mix_valid_and_invalid(nodes):
    assert len(nodes) == STEPS
    valid = sum(prefix_validity(q, steps, M, PHRASE)[-1] for q, steps in nodes)
    assert 0.3 < valid / STEPS < 0.7


@pytest.mark.parametrize("auc", [0.7, 0.8, 0.9, 0.95])
def test_the_noisy_oracle_hits_its_auc(nodes, auc):
    assert realized_auc(nodes, auc, seed=0) == pytest.approx(auc, abs=0.01)


def test_the_exact_oracle_is_exact(nodes):
    assert realized_auc(nodes, 1.0, seed=0) == 1.0
    scores = OracleScorer(M, PHRASE).score(nodes)
    for (q, steps), s in zip(nodes, scores, strict=True):
        assert s == [1.0 if v else 0.0 for v in prefix_validity(q, steps, M, PHRASE)]


def test_scores_by_hand():
    # 24 - 9 = 16 is a slip: every prefix from it on is invalid.
    steps = ["24 + 7 = 31", "31 - 9 = 22", "The answer is: 22"]
    assert oracle_scores("24 - 9 + 7", steps, M, PHRASE) == [1.0, 1.0, 1.0]
    assert oracle_scores("24 - 9 + 7", ["24 - 9 = 16", *steps[1:]], M, PHRASE) == [0.0] * 3
    # AUC 0.76025 is Phi(1 / sqrt 2) to 5 places: d = 1 and scores Phi(z +- 1/2).
    assert separation(0.76025) == pytest.approx(1.0, abs=1e-4)
    noisy = oracle_scores("24 - 9 + 7", steps, M, PHRASE, auc=0.8, seed=3)
    assert all(0 < s < 1 for s in noisy)
    assert noisy != oracle_scores("24 - 9 + 7", steps, M, PHRASE, auc=0.8, seed=4)


def test_a_node_scores_the_same_however_it_is_asked(nodes):
    items = nodes[:300]
    first = OracleScorer(M, PHRASE, auc=0.8, seed=7).score(items)
    second = OracleScorer(M, PHRASE, auc=0.8, seed=7)
    assert second.score(items) == first
    # Another batch composition and order: each item alone, and the batch reversed.
    assert [second.score([item])[0] for item in items] == first
    assert second.score(items[::-1]) == first[::-1]
    # Each prefix's own score is the k-th score of the full solution.
    for (q, steps), full in zip(items, first, strict=True):
        for k in range(1, len(steps) + 1):
            assert second.score([(q, steps[:k])])[0][-1] == full[k - 1]
    # Another seed draws other scores.
    assert OracleScorer(M, PHRASE, auc=0.8, seed=8).score(items) != first


def test_bad_arguments_are_refused():
    for auc in (0.5, 0.3, 1.01, math.nan, True, "0.8"):
        with pytest.raises(ValueError, match="auc must be above 0.5 and at most 1.0"):
            OracleScorer(M, PHRASE, auc=auc)
    with pytest.raises(ValueError, match="modulus"):
        OracleScorer(1, PHRASE)
    with pytest.raises(ValueError, match="answer phrase"):
        OracleScorer(M, " ")
    with pytest.raises(ValueError, match="seed"):
        OracleScorer(M, PHRASE, seed=1.5)
    with pytest.raises(ValueError, match="not a synthetic arithmetic question"):
        OracleScorer(M, PHRASE).score([("What is 2 + 2?", ["4"])])


class ArithmeticBackend:
    """A policy for the synthetic task that errs: from the prompt's question and steps so far,
    each sample applies a random unused operation, right or (one time in four) off by one, or
    answers (one time in ten before every operation is applied). Drawn from the request's
    seed and the sample's index only, as a real backend draws."""

    name = "arithmetic"

    def generate(self, requests: list[Request]) -> list[Completion]:
        return [
            Completion(
                prompt_tokens=len(r.prompt.split()),
                samples=[self._sample(r, k) for k in range(r.n)],
            )
            for r in requests
        ]

    def close(self) -> None:
        pass

    @staticmethod
    def _sample(request: Request, k: int) -> Sample:
        rng = random.Random(f"{request.seed}-{k}")
        head, _, solution = request.prompt.partition("\nAnswer:\n")
        question = head.removeprefix("Question: ")
        tokens = question.split()
        remaining = list(zip(tokens[1::2], map(int, tokens[2::2]), strict=True))
        steps = FMT.split_steps(solution)
        value = int(steps[-1].split()[-1]) if steps else int(tokens[0])
        for step in steps:
            left, op, right, _, _ = step.split()
            operand = int(right)
            if (op, operand) in remaining:
                remaining.remove((op, operand))
        if not remaining or rng.random() < 0.1:
            text = FMT.answer_text(str(value))
        else:
            op, operand = rng.choice(remaining)
            result = apply_operation(value, op, operand, M)
            if rng.random() < 0.25:
                result = (result + 1) % M
            text = f"{value} {op} {operand} = {result}"
        prefix = "\n" if steps else ""
        return Sample(f"{prefix}Step {len(steps) + 1}: {text}{FMT.tag}", 5, "stop")


def chosen(result) -> str | None:
    answers = [extract_answer(result.solution_text(i), PHRASE, FMT.tag) for i in result.solutions]
    classes = [sorted(set(answers) - {None}).index(a) if a is not None else None for a in answers]
    choice = weighted_vote(classes, [result.solution_score(i, "last") for i in result.solutions])
    return None if choice is None else sorted(set(answers) - {None})[choice]


def test_a_search_with_the_noisy_oracle_is_identical_across_runs():
    _, test = make_splits(
        0, 12, [2, 3, 4], M, 5, PHRASE, 0.5, operations=("+", "-"), any_order=True
    )

    def search():
        scorer = OracleScorer(M, PHRASE, auc=0.8, seed=11)
        return rebase(test, ArithmeticBackend(), scorer, 8, settings(max_depth=6))

    def outcome(results):
        return [
            ([(n.parent, n.text, n.score, n.finished) for n in r.nodes], r.solutions, chosen(r))
            for r in results
        ]

    results = search()
    assert outcome(search()) == outcome(results)
    # The search is a real one: valid and invalid nodes, right and wrong chosen answers.
    validity = {
        prefix_validity(r.question, r.steps(i), M, PHRASE)[-1]
        for r in results
        for i in range(1, len(r.nodes))
    }
    assert validity == {True, False}
    right = [chosen(r) == p.answer for r, p in zip(results, test, strict=True)]
    assert any(right) and not all(right)


def test_heldout_metrics_against_exact_validity_and_the_labels_agreement():
    """`score_heldout` with the task's validity: the exact oracle's AUC against it is 1 while
    its AUC against labels that flip two steps is not, and the agreement counts the flips."""
    _, test = make_splits(0, 20, [2, 3], M, 4, PHRASE, 0.5, operations=("+", "-"), any_order=True)
    rng = random.Random(1)
    records = []
    for p in test[:10]:
        for steps in solutions(p, rng)[:2]:
            exact = prefix_validity(p.question, steps, M, PHRASE)
            records.append(
                StepLabelled(
                    question_id=p.id,
                    question=p.question,
                    steps=steps,
                    soft_labels=[float(v) for v in exact],
                    hard_labels=list(exact),
                    final_correct=exact[-1],
                    answer=extract_answer(steps[-1], PHRASE, FMT.tag),
                )
            )
    # One label made good where the step is invalid, one made bad where it is valid.
    wrong = next(i for i, r in enumerate(records) if not r.hard_labels[-1])
    right = next(i for i, r in enumerate(records) if r.hard_labels[0])
    flipped = list(records)
    for i in (wrong, right):
        labels = list(records[i].hard_labels)
        labels[-1 if i == wrong else 0] = not labels[-1 if i == wrong else 0]
        flipped[i] = dataclasses.replace(records[i], hard_labels=labels)
    metrics = score_heldout(OracleScorer(M, PHRASE), flipped, validity_of(M, PHRASE))
    steps = sum(len(r.steps) for r in records)
    assert metrics["step_auc_exact"] == 1.0
    assert metrics["step_auc"] < 1.0
    assert metrics["exact_positive_steps"] == sum(sum(r.hard_labels) for r in records)
    assert metrics["label_agreement"] == {
        "steps": steps,
        "agree": steps - 2,
        "rate": (steps - 2) / steps,
        "rollout_good_exact_bad": 1,
        "rollout_bad_exact_good": 1,
    }
    # Without the task's validity, the metrics are those against the labels alone.
    plain = score_heldout(OracleScorer(M, PHRASE), flipped)
    assert "step_auc_exact" not in plain and plain["step_auc"] == metrics["step_auc"]
