"""The voting limits of Wu et al.'s Theorems 1-2, estimated from pools drawn from known answer
distributions, converge to the true limit as the pool grows."""

from __future__ import annotations

import numpy as np
import pytest

from inferscale.scaling.subsets import QuestionPool
from inferscale.scaling.voting_limits import right_on_top, voting_limit


def test_one_question_probability_that_its_right_class_is_on_top():
    rng = np.random.default_rng(0)
    assert right_on_top([0, 0, 1], [0, 1], None, rng) == 1.0  # every class right
    assert right_on_top([None, None], [0], None, rng) == 0.0  # no answer never wins
    assert right_on_top([1, 1, None], [0], None, rng) == 0.0
    # 5 samples of the right class against 3: P(Beta(5, 3) > 1/2) = 1 - 29/128.
    assert right_on_top([0] * 5 + [1] * 3, [0], None, rng, draws=20000) == pytest.approx(
        1 - 29 / 128, abs=0.01
    )
    # A no-answer sample weighs nothing: one right against one wrong is even.
    assert right_on_top([0, 1, None], [0], None, rng, draws=20000) == pytest.approx(0.5, abs=0.01)
    # Weighted: class 0 holds one sample scored 0.9, class 1 two scored 0.2 and 0.3.
    weighted = right_on_top([0, 1, 1], [0], [0.9, 0.2, 0.3], rng, draws=20000)
    majority = right_on_top([0, 1, 1], [0], None, rng, draws=20000)
    assert majority == pytest.approx(0.25, abs=0.01) and weighted > 0.6


def known_questions(rng, questions: int, answers: int = 4):
    """Per question: answer probabilities, and a mean score per answer; answer 0 is right."""
    probabilities = [rng.dirichlet(np.full(answers, 0.8)) for _ in range(questions)]
    mean_scores = [rng.uniform(0.1, 0.9, size=answers) for _ in range(questions)]
    return probabilities, mean_scores


def draw_pools(rng, probabilities, mean_scores, size: int) -> list[QuestionPool]:
    pools = []
    for p, mu in zip(probabilities, mean_scores):
        classes = rng.choice(len(p), size=size, p=p)
        # Scores around the answer's mean, so E[score | answer] = mu.
        scores = np.clip(mu[classes] + rng.uniform(-0.1, 0.1, size=size), 0, 1)
        pools.append(QuestionPool(classes.tolist(), [0], scores.tolist()))
    return pools


@pytest.mark.parametrize("vote", ["majority", "weighted"])
def test_estimate_converges_to_the_true_limit(vote):
    rng = np.random.default_rng(0)
    probabilities, mean_scores = known_questions(rng, 200)
    if vote == "majority":
        truth = np.mean([p.argmax() == 0 for p in probabilities])
    else:  # the class with the largest P(class) x E[score | class]
        truth = np.mean([(p * mu).argmax() == 0 for p, mu in zip(probabilities, mean_scores)])
    errors = []
    for size in (16, 256, 4096):
        limit = voting_limit(draw_pools(rng, probabilities, mean_scores, size), vote, 100)
        errors.append(abs(limit.accuracy - truth))
        assert limit.low <= limit.accuracy <= limit.high
        assert limit.questions == 200
    # Tolerance: the largest pool decides all but questions whose top two answers are within
    # a few points of each other; 0.02 is 4 of the 200.
    assert errors[-1] <= 0.02, errors
    assert errors[-1] <= errors[0]


def test_interval_covers_the_questions_and_their_pools():
    # 30 questions vote 5 to 3 for the right answer, 10 never give it.
    pools = [QuestionPool([0] * 5 + [1] * 3, [0]) for _ in range(30)]
    pools += [QuestionPool([1] * 8, [0]) for _ in range(10)]
    limit = voting_limit(pools, "majority", replicates=400, seed=1, draws=4000)
    assert limit.accuracy == pytest.approx(0.75 * (1 - 29 / 128), abs=0.01)
    assert limit.low < limit.accuracy < limit.high
    # Every question unanimous: nothing can move.
    fixed = voting_limit([QuestionPool([0] * 4, [0])] * 10, "majority", replicates=50)
    assert (fixed.low, fixed.accuracy, fixed.high) == (1.0, 1.0, 1.0)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="no questions"):
        voting_limit([], "majority")
    with pytest.raises(ValueError, match="unknown vote"):
        voting_limit([QuestionPool([0], [0])], "best_of_n")
    with pytest.raises(ValueError, match="score"):
        voting_limit([QuestionPool([0], [0])], "weighted")
