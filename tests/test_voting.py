import pytest

from inferscale.search.voting import best_of_n, majority_vote, weighted_vote


def test_majority_picks_most_frequent_class():
    assert majority_vote([0, 1, 1, 2, 1, 0]) == 1


def test_majority_tie_goes_to_class_seen_first():
    assert majority_vote([0, 1, 1, 0]) == 0
    assert majority_vote([2, 0, 0, 2, 1]) == 2


def test_majority_ignores_no_answer():
    assert majority_vote([None, None, 3, None]) == 3
    assert majority_vote([None, 1, None, 0, 0, None]) == 0


def test_majority_without_answers_is_none():
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_weighted_sums_scores_per_class():
    # class 0: 0.5 + 0.25 = 0.75; class 1: 0.875
    assert weighted_vote([0, 1, 0], [0.5, 0.875, 0.25]) == 1
    # class 0: 0.5 + 0.5 = 1.0 beats class 1: 0.875
    assert weighted_vote([0, 1, 0], [0.5, 0.875, 0.5]) == 0


def test_weighted_tie_goes_to_class_seen_first():
    assert weighted_vote([1, 0, 0], [1.0, 0.5, 0.5]) == 1
    assert weighted_vote([0, 1, 1], [1.0, 0.5, 0.5]) == 0


def test_weighted_tie_is_independent_of_summation_order():
    # 0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ in plain float sums but are the same number.
    assert weighted_vote([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.3, 0.2, 0.1]) == 0
    assert weighted_vote([1, 1, 1, 0, 0, 0], [0.1, 0.2, 0.3, 0.3, 0.2, 0.1]) == 1


def test_weighted_ignores_no_answer_and_handles_negative_scores():
    assert weighted_vote([None, 0, 1], [9.0, -2.0, -1.0]) == 1
    assert weighted_vote([None, None], [1.0, 2.0]) is None


def test_best_of_n_picks_class_of_top_candidate():
    assert best_of_n([0, 0, 0, 1], [0.5, 0.5, 0.5, 0.75]) == 1


def test_best_of_n_tie_goes_to_earliest_candidate():
    assert best_of_n([2, 1, 2, 1], [0.25, 0.75, 0.5, 0.75]) == 1
    assert best_of_n([0, 1], [0.5, 0.5]) == 0


def test_best_of_n_skips_candidates_without_answer():
    assert best_of_n([None, 1, 0], [1.0, -3.0, -4.0]) == 1
    assert best_of_n([None], [1.0]) is None


def test_scores_must_match_candidates():
    with pytest.raises(ValueError):
        weighted_vote([0, 1], [1.0])
    with pytest.raises(ValueError):
        best_of_n([0], [1.0, 2.0])
