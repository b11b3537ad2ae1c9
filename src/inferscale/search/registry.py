"""Search strategies by name, all with one signature:
(problems, backend, scorer or None, budget, settings) -> one SearchResult per problem."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from inferscale.data.records import Problem
from inferscale.generation.base import Backend
from inferscale.search.beam import beam_search
from inferscale.search.mcts import mcts
from inferscale.search.rebase import rebase
from inferscale.search.tree import Scorer, SearchResult, SearchSettings

Strategy = Callable[
    [Sequence[Problem], Backend, Scorer | None, int, SearchSettings], list[SearchResult]
]

TREE_STRATEGIES: dict[str, Strategy] = {
    "rebase": rebase,
    "mcts": mcts,
    "beam_search": beam_search,
}
