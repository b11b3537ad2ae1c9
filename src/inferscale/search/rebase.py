"""REBASE, reward-balanced search (Wu et al. 2024, Sec. 3.1.2; official code `rebase.py`).

Depth 0 expands the question `budget` times, one step each. At every later depth, each new node
that finished is set aside as a solution and takes one unit off the remaining width; the open
ones are scored by the PRM and share the remaining width by a softmax of their scores
(`allocate_widths`), node j getting n_j children. The search stops when no width or no open node
is left. A node at `max_depth` counts as finished, so it becomes a solution instead of being
dropped; the official code instead stops at its depth limit and keeps only the nodes with an
answer. Every new node is scored, finished ones included, since the vote needs their scores.

The widths of a depth sum to the remaining width, which is therefore always the number of open
nodes: the search ends with exactly `budget` solutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from inferscale.data.records import Problem
from inferscale.generation.base import Backend
from inferscale.search.tree import (
    Scorer,
    SearchResult,
    SearchSettings,
    check_budget,
    expand,
    new_search,
    require_scorer,
    score_nodes,
)


def allocate_widths(scores: Sequence[float], width: int, temperature: float) -> list[int]:
    """Split `width` children among nodes by a softmax of their scores (balance temperature Tb).

    Nodes are taken highest score first (ties in their given order) with w_j = exp(R_j / Tb);
    node j gets n_j = ceil(W_rem * w_j / sum_{k>=j} w_k) and W_rem drops by n_j. Returns the
    widths in the given order; they sum to `width`, and low nodes may get 0.
    """
    if not temperature > 0:
        raise ValueError(f"balance temperature must be positive, got {temperature}")
    if width < 0:
        raise ValueError(f"width must not be negative, got {width}")
    if not all(math.isfinite(s) for s in scores):
        raise ValueError(f"scores must be finite numbers, got {list(scores)}")
    if not scores:
        if width:
            raise ValueError(f"cannot split width {width} among no nodes")
        return []
    order = sorted(range(len(scores)), key=lambda j: -scores[j])
    top = scores[order[0]]
    # Subtracting the top score keeps exp from overflowing at small Tb (the top weight is 1).
    # The division and ceil are exact on those weights: a float quotient one ulp above an
    # integer would round a whole child up.
    weights = [Fraction(math.exp((scores[j] - top) / temperature)) for j in order]
    rest = [Fraction(0)] * len(weights)
    total = Fraction(0)
    for k in range(len(weights) - 1, -1, -1):
        total += weights[k]
        rest[k] = total
    widths = [0] * len(scores)
    remaining = width
    for j, weight, weight_left in zip(order, weights, rest, strict=True):
        if remaining == 0:
            break  # also keeps 0/0 away where later weights underflowed to 0
        n = math.ceil(remaining * weight / weight_left)
        widths[j] = n
        remaining -= n
    return widths


def rebase(
    problems: Sequence[Problem],
    backend: Backend,
    scorer: Scorer | None,
    budget: int,
    settings: SearchSettings,
) -> list[SearchResult]:
    """REBASE with width `budget` for every question, all questions expanded together."""
    scorer = require_scorer(scorer, "rebase")
    check_budget(budget, "rebase")
    searches = [new_search(p, settings.fmt) for p in problems]
    remaining = [budget] * len(searches)
    new = expand(searches, [(q, 0, budget) for q in range(len(searches))], backend, settings)
    while new:
        score_nodes(searches, new, scorer)
        open_nodes: dict[int, list[int]] = {}
        for q, i in new:
            if searches[q].nodes[i].finished:
                searches[q].solutions.append(i)
                remaining[q] -= 1
            else:
                open_nodes.setdefault(q, []).append(i)
        expansions = []
        for q, nodes in open_nodes.items():
            if remaining[q] == 0:
                continue
            scores = [searches[q].nodes[i].score for i in nodes]
            widths = allocate_widths(scores, remaining[q], settings.balance_temperature)
            expansions += [(q, i, n) for i, n in zip(nodes, widths, strict=True) if n > 0]
        new = expand(searches, expansions, backend, settings)
    return searches
