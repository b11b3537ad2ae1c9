import itertools
import math

import pytest

from inferscale.scaling.subsets import (
    QuestionPool,
    budgets_up_to,
    expected_vote_accuracy,
    pass_at_k,
    question_accuracies,
)
from inferscale.search.voting import best_of_n, majority_vote, weighted_vote

VOTES = ["majority", "weighted", "best_of_n"]

# Small pools with tied classes, tied scores, missing answers and negative scores. Scores are
# dyadic so that sums are exact in any order.
POOLS = [
    QuestionPool([0, 1, 0, 1, None, 2], {1}, [0.5, 0.25, 0.25, 0.5, 1.0, 0.75]),
    QuestionPool([0, None, 1, 1, 0], {0}, [0.5, 0.5, 0.25, 0.25, 0.5]),
    QuestionPool([0, 1, 2, 3], {2}, [0.5, 0.5, 0.5, 0.5]),
    QuestionPool([None, 0, None, 1, 1, 0], {0}, [-1.0, -0.5, 2.0, -0.5, -0.25, -0.75]),
    QuestionPool([0, 0, 1, None], {1}, [0.25, 0.5, 0.75, 0.0]),
    QuestionPool([None, 0, 1, 1, 2], {0, 2}, [0.5, 1.0, 0.5, 0.5, 0.25]),
]
CASES = [(pool, n) for pool in POOLS for n in range(1, len(pool.classes) + 1)]


def literal_vote(vote, classes, scores):
    """The vote applied to one ordered list, first-seen tie-breaking taken literally."""
    answered = [(c, s) for c, s in zip(classes, scores) if c is not None]
    if not answered:
        return None
    if vote == "best_of_n":
        top = max(s for _, s in answered)
        return next(c for c, s in answered if s == top)
    totals = {}
    for c, s in answered:
        totals[c] = totals.get(c, 0) + (1 if vote == "majority" else s)
    top = max(totals.values())
    return next(c for c, _ in answered if totals[c] == top)


def brute_force_accuracy(pool, n, vote):
    """Accuracy averaged over every ordered subset (n-permutation) of the pool."""
    orders = list(itertools.permutations(range(len(pool.classes)), n))
    wins = 0
    for order in orders:
        winner = literal_vote(
            vote, [pool.classes[i] for i in order], [pool.scores[i] for i in order]
        )
        wins += winner in pool.correct_classes
    return wins / len(orders)


def estimate(pool, n, vote, **kwargs):
    return expected_vote_accuracy(
        pool.classes, pool.correct_classes, n, vote, pool.scores, **kwargs
    )


def test_voting_module_agrees_with_literal_votes_on_every_order():
    functions = {
        "majority": lambda c, s: majority_vote(c),
        "weighted": weighted_vote,
        "best_of_n": best_of_n,
    }
    for pool in POOLS:
        for order in itertools.permutations(range(len(pool.classes))):
            classes = [pool.classes[i] for i in order]
            scores = [pool.scores[i] for i in order]
            for vote in VOTES:
                assert functions[vote](classes, scores) == literal_vote(vote, classes, scores)


@pytest.mark.parametrize("vote", VOTES)
@pytest.mark.parametrize("pool,n", CASES)
def test_exact_mode_matches_brute_force(pool, n, vote):
    assert estimate(pool, n, vote) == pytest.approx(brute_force_accuracy(pool, n, vote), abs=1e-12)


@pytest.mark.parametrize("vote", VOTES)
@pytest.mark.parametrize("pool,n", CASES)
def test_monte_carlo_mode_matches_brute_force(pool, n, vote):
    draws = 2000
    expected = brute_force_accuracy(pool, n, vote)
    # Each draw's value has variance at most that of the 0/1 outcome of one ordered subset.
    tolerance = 4 * math.sqrt(expected * (1 - expected) / draws) + 1e-12
    estimated = estimate(pool, n, vote, max_exact=0, draws=draws, seed=1)
    assert estimated == pytest.approx(expected, abs=tolerance)


def test_monte_carlo_matches_exact_enumeration_on_a_larger_pool():
    classes = [i % 5 if i % 7 else None for i in range(40)]
    scores = [((i * 37) % 16) / 16 for i in range(40)]
    for vote in VOTES:
        exact = expected_vote_accuracy(classes, {1, 3}, 2, vote, scores)  # C(40, 2) = 780
        sampled = expected_vote_accuracy(classes, {1, 3}, 2, vote, scores, max_exact=100)
        assert sampled == pytest.approx(exact, abs=4 * math.sqrt(0.25 / 2000))


def test_monte_carlo_is_deterministic_by_seed():
    pool = POOLS[0]
    first = estimate(pool, 3, "majority", max_exact=0, draws=500, seed=7)
    assert estimate(pool, 3, "majority", max_exact=0, draws=500, seed=7) == first
    assert estimate(pool, 3, "majority", max_exact=0, draws=500, seed=8) != first


def test_full_pool_equals_the_vote_on_the_pool_without_ties():
    classes = [0, 1, 1, 2, 1, None, 0]
    scores = [0.9, 0.2, 0.3, 0.95, 0.1, 0.99, 0.4]
    full_pool_winners = {
        "majority": majority_vote(classes),
        "weighted": weighted_vote(classes, scores),
        "best_of_n": best_of_n(classes, scores),
    }
    assert full_pool_winners == {"majority": 1, "weighted": 0, "best_of_n": 2}
    for vote, winner in full_pool_winners.items():
        for correct in ({0}, {1}, {2}):
            accuracy = expected_vote_accuracy(classes, correct, len(classes), vote, scores)
            assert accuracy == float(winner in correct)


def test_single_sample_majority_is_the_fraction_of_correct_samples():
    assert expected_vote_accuracy([0, 1, None, 1, 2], {1}, 1) == pytest.approx(2 / 5)


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError):
        expected_vote_accuracy([0, 1], {0}, 3)
    with pytest.raises(ValueError):
        expected_vote_accuracy([0, 1], {0}, 0)
    with pytest.raises(ValueError):
        expected_vote_accuracy([0, 1], {0}, 1, "weighted")
    with pytest.raises(ValueError):
        expected_vote_accuracy([0, 1], {0}, 1, "plurality")
    with pytest.raises(ValueError, match="2 seeds for 1 questions"):
        question_accuracies([QuestionPool([0, 1], {0})], 1, seeds=[0, 1])


def test_question_accuracies_are_each_questions_own_expectation():
    questions = [
        QuestionPool([0, 0], {0}),  # expected accuracy 1
        QuestionPool([0, None], {1}),  # 0
        QuestionPool([0, 1], {1}),  # 0.5 at n=1; at n=2 the tie goes to either with prob 1/2
        QuestionPool([0, 1, 1], {1}),  # 2/3 at n=1
    ]
    assert question_accuracies(questions, 1).tolist() == pytest.approx([1, 0, 0.5, 2 / 3])
    assert question_accuracies(questions[:3], 2).tolist() == pytest.approx([1, 0, 0.5])


def test_pass_at_k_matches_binomial_formula():
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_budgets_are_powers_of_two_then_the_pool_size():
    assert budgets_up_to(1) == [1]
    assert budgets_up_to(8) == [1, 2, 4, 8]
    assert budgets_up_to(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError):
        budgets_up_to(0)
