"""Each tree search's function, by its name in the registry. Tree searches share one signature:
(problems, backend, scorer, budget, settings) -> one SearchResult per problem."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from inferscale.data.records import Problem
from inferscale.generation.base import Backend
from inferscale.search.beam import beam_search
from inferscale.search.mcts import mcts
from inferscale.search.rebase import rebase
from inferscale.search.registry import TREE_STRATEGIES
from inferscale.search.tree import Scorer, SearchResult, SearchSettings

Search = Callable[
    [Sequence[Problem], Backend, Scorer | None, int, SearchSettings], list[SearchResult]
]
SEARCHES: dict[str, Search] = {"rebase": rebase, "mcts": mcts, "beam_search": beam_search}
if set(SEARCHES) != set(TREE_STRATEGIES):  # a tree strategy registered without its search
    raise ImportError(f"tree searches {sorted(SEARCHES)} != registry's {sorted(TREE_STRATEGIES)}")
