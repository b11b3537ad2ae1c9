"""MCTS, the baseline of Wu et al. 2024 (appendix), over steps.

Each iteration selects, for every question, a path from the root by UCT,
    UCT(s) = Q(s) + C sqrt(ln N(parent) / N(s))   (an unvisited child: infinite),
down to an open node that has no children yet; ties go to the first child. That node gets
`root_children(budget)` children at the root and 2 elsewhere, fewer when less budget is left.
Each new child is valued by the PRM (its last step's score) and that value is backed up from
the child to the root: N <- N + 1, Q <- ((N - 1) Q + V) / N. The budget is the number of nodes
generated; a question stops when it is spent or nothing is left to expand.

A finished node is a solution and is never expanded. Selection also skips finished nodes and
subtrees with nothing left to expand: backing a finished leaf up again each time selection
reached it would generate nothing, and with values in [0, 1] and C = 1 a finished leaf of value
1 beside a sibling of value 0 with k visits keeps being selected until N(parent) ~ e^k, so the
budget could stall unspent. Each finished leaf's value is backed up once, when it is made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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

CHILDREN_BELOW_ROOT = 2


def root_children(budget: int) -> int:
    """Children of the root: budget // 8, at least 2 (the paper pairs 4/8/16 with 32/64/128)."""
    return max(2, budget // 8)


@dataclass
class UctStats:
    """Per node of one tree, indexed like `SearchResult.nodes`."""

    children: list[list[int]] = field(default_factory=lambda: [[]])
    visits: list[int] = field(default_factory=lambda: [0])
    values: list[float] = field(default_factory=lambda: [0.0])
    expandable: list[bool] = field(default_factory=lambda: [True])  # an open leaf in its subtree

    def add(self, node: int, parent: int, finished: bool) -> None:
        if node != len(self.visits):
            raise ValueError(f"node {node} added out of order; expected {len(self.visits)}")
        self.children[parent].append(node)
        self.children.append([])
        self.visits.append(0)
        self.values.append(0.0)
        self.expandable.append(not finished)


def uct(value: float, visits: int, parent_visits: int, exploration: float) -> float:
    if visits == 0:
        return math.inf
    return value + exploration * math.sqrt(math.log(parent_visits) / visits)


def select_path(stats: UctStats, exploration: float) -> list[int] | None:
    """Node indices from the root (0) down to the open childless node to expand; None when
    nothing in the tree can be expanded."""
    if not stats.expandable[0]:
        return None
    path = [0]
    node = 0
    while stats.children[node]:
        candidates = [c for c in stats.children[node] if stats.expandable[c]]
        parent_visits = stats.visits[node]
        # max() keeps the first of equal keys: ties go to the first child.
        node = max(
            candidates,
            key=lambda c: uct(stats.values[c], stats.visits[c], parent_visits, exploration),
        )
        path.append(node)
    return path


def backup(path: Sequence[int], value: float, stats: UctStats) -> None:
    """Count one visit of value `value` on every node of `path`."""
    for node in path:
        stats.visits[node] += 1
        n = stats.visits[node]
        stats.values[node] = ((n - 1) * stats.values[node] + value) / n


def refresh_expandable(path: Sequence[int], stats: UctStats) -> None:
    """After the last node of `path` was expanded: recompute which nodes on it can still lead
    to an open leaf, from the bottom up."""
    for node in reversed(path):
        stats.expandable[node] = any(stats.expandable[c] for c in stats.children[node])


def mcts(
    problems: Sequence[Problem],
    backend: Backend,
    scorer: Scorer | None,
    budget: int,
    settings: SearchSettings,
) -> list[SearchResult]:
    """MCTS with `budget` generated nodes per question, one node per question per iteration."""
    scorer = require_scorer(scorer, "mcts")
    check_budget(budget, "mcts")
    searches = [new_search(p, settings.fmt) for p in problems]
    stats = [UctStats() for _ in searches]
    spent = [0] * len(searches)
    while True:
        paths: dict[int, list[int]] = {}
        expansions = []
        for q in range(len(searches)):
            if spent[q] >= budget:
                continue
            path = select_path(stats[q], settings.exploration)
            if path is None:
                continue
            leaf = path[-1]
            wanted = root_children(budget) if leaf == 0 else CHILDREN_BELOW_ROOT
            paths[q] = path
            expansions.append((q, leaf, min(wanted, budget - spent[q])))
        if not expansions:
            return searches
        new = expand(searches, expansions, backend, settings)
        score_nodes(searches, new, scorer)
        for q, i in new:
            node = searches[q].nodes[i]
            stats[q].add(i, paths[q][-1], node.finished)
            if node.finished:
                searches[q].solutions.append(i)
            backup([*paths[q], i], node.score, stats[q])
            spent[q] += 1
        for q, path in paths.items():
            refresh_expandable(path, stats[q])
