"""Every inference strategy by name: the one place that knows what each strategy is.

The config validates strategy names against `STRATEGIES`, evaluation reads each strategy's kind
(and its vote, or its search function), and analysis and the CLI read how its budget counts and
how it is drawn. Tree searches share one signature:
(problems, backend, scorer, budget, settings) -> one SearchResult per problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from inferscale.data.records import Problem
from inferscale.generation.base import Backend
from inferscale.scaling.subsets import Vote
from inferscale.search.beam import beam_search
from inferscale.search.mcts import mcts
from inferscale.search.rebase import rebase
from inferscale.search.tree import Scorer, SearchResult, SearchSettings

Search = Callable[
    [Sequence[Problem], Backend, Scorer | None, int, SearchSettings], list[SearchResult]
]
# greedy: one argmax decode per question; pool: a vote over one pool of samples per question,
# every budget n scored from that pool; tree: a PRM-guided search per budget.
Kind = Literal["greedy", "pool", "tree"]


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str  # as a reader sees it in tables and legends
    kind: Kind
    needs_prm: bool
    budget_unit: str  # what one unit of the strategy's budget is
    marker: str  # matplotlib marker
    vote: Vote | None = None  # pool strategies: how the pool votes
    search: Search | None = None  # tree strategies: the search

    def budget_label(self, budget: int) -> str:
        if self.kind == "greedy":
            return self.label
        unit = self.budget_unit.removesuffix("s") if budget == 1 else self.budget_unit
        return f"{self.label} ({budget} {unit})"


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("greedy", "greedy", "greedy", False, "decode", "*"),
        Strategy("majority_vote", "majority vote", "pool", False, "samples", "o", vote="majority"),
        Strategy("weighted_vote", "weighted vote", "pool", True, "samples", "^", vote="weighted"),
        Strategy("best_of_n", "best-of-n", "pool", True, "samples", "v", vote="best_of_n"),
        Strategy("rebase", "REBASE", "tree", True, "width", "D", search=rebase),
        Strategy("mcts", "MCTS", "tree", True, "generated nodes", "P", search=mcts),
        Strategy("beam_search", "beam search", "tree", True, "beams", "X", search=beam_search),
    )
}


def of_kind(kind: Kind) -> tuple[str, ...]:
    """The names of the strategies of one kind, in registry order."""
    return tuple(name for name, s in STRATEGIES.items() if s.kind == kind)


TREE_STRATEGIES = of_kind("tree")
POOL_STRATEGIES = of_kind("pool")
