"""Step-level beam search with a PRM, as in Hugging Face's search-and-learn.

With N beams (the budget) and beam width M: depth 0 expands the question N times. Then, at each
depth, the new nodes that finished become solutions; of the open ones the N / M best by PRM
score (their step scores aggregated by `settings.aggregation`, as search-and-learn's
`agg_strategy`; ties keep the earlier node) are expanded M times each, the rest are dropped. The
search stops when no open node is left or N solutions are collected (a node at `max_depth`
counts as finished). Only the first N solutions go to the vote, as in search-and-learn.

N must be a multiple of M. Unlike search-and-learn, which refills the N beams by repeating the
survivors when fewer than N / M are open, each survivor gets exactly M children, so a depth
never generates more than N nodes and fewer once beams have finished.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def top_nodes(scores: Sequence[float], keep: int) -> list[int]:
    """Positions of the `keep` highest scores, ties to the earlier position, in position order."""
    ranked = sorted(range(len(scores)), key=lambda j: -scores[j])
    return sorted(ranked[:keep])


def beam_search(
    problems: Sequence[Problem],
    backend: Backend,
    scorer: Scorer | None,
    budget: int,
    settings: SearchSettings,
) -> list[SearchResult]:
    """Beam search with `budget` beams and `settings.beam_width` children per kept beam."""
    scorer = require_scorer(scorer, "beam_search")
    check_budget(budget, "beam_search")
    width = settings.beam_width
    if budget % width:
        raise ValueError(
            f"beam search needs the budget (N = {budget}) to be a multiple of the beam width "
            f"(M = {width})"
        )
    keep = budget // width
    searches = [new_search(p, settings.fmt) for p in problems]
    new = expand(searches, [(q, 0, budget) for q in range(len(searches))], backend, settings)
    while new:
        score_nodes(searches, new, scorer)
        open_nodes: dict[int, list[int]] = {}
        for q, i in new:
            search = searches[q]
            if not search.nodes[i].finished:
                open_nodes.setdefault(q, []).append(i)
            elif len(search.solutions) < budget:
                search.solutions.append(i)
        expansions = []
        for q, nodes in open_nodes.items():
            search = searches[q]
            if len(search.solutions) >= budget:
                continue
            scores = [search.solution_score(i, settings.aggregation) for i in nodes]
            expansions += [(q, nodes[j], width) for j in top_nodes(scores, keep)]
        new = expand(searches, expansions, backend, settings)
    return searches
