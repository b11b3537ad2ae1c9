"""Votes over candidate solutions whose answers are already grouped into equivalence classes.

A candidate's class is an int id (equal ids mean equivalent answers) or None when the candidate
gave no answer; None candidates never win. Every vote breaks ties in favour of the class seen
first, i.e. the tied class with the lowest first position in `classes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def majority_vote(classes: Sequence[int | None]) -> int | None:
    """The most frequent class; None when no candidate has an answer."""
    counts: dict[int, int] = {}
    for answer_class in classes:
        if answer_class is not None:
            counts[answer_class] = counts.get(answer_class, 0) + 1
    return _first_seen_max(counts)


def weighted_vote(classes: Sequence[int | None], scores: Sequence[float]) -> int | None:
    """The class whose candidates' scores sum highest; None when no candidate has an answer."""
    _check_scores(classes, scores)
    members: dict[int, list[float]] = {}
    for answer_class, score in zip(classes, scores, strict=True):
        if answer_class is not None:
            members.setdefault(answer_class, []).append(score)
    # fsum is exact up to one final rounding, so a class's total does not depend on candidate order
    # and equal real-valued totals compare equal.
    return _first_seen_max({c: math.fsum(s) for c, s in members.items()})


def best_of_n(classes: Sequence[int | None], scores: Sequence[float]) -> int | None:
    """The class of the highest-scored candidate that has an answer; None when none has one."""
    _check_scores(classes, scores)
    best_class, best_score = None, -math.inf
    for answer_class, score in zip(classes, scores, strict=True):
        if answer_class is not None and (best_class is None or score > best_score):
            best_class, best_score = answer_class, score
    return best_class


def _first_seen_max(totals: dict[int, float]) -> int | None:
    # dicts keep insertion order, which is first-seen order; max() returns the first maximum.
    return max(totals, key=totals.__getitem__, default=None)


def _check_scores(classes: Sequence[int | None], scores: Sequence[float]) -> None:
    if len(classes) != len(scores):
        raise ValueError(f"{len(classes)} classes but {len(scores)} scores")
