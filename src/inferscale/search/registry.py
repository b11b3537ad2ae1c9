"""Every inference strategy by name: the one place that knows what each strategy is.

The config validates strategy names against `STRATEGIES`, evaluation reads each strategy's kind
(and its vote; a tree search's function is in `inferscale.search.searches`), and analysis and the
CLI read how its budget counts and how it is drawn. The registry imports no search code: the
config imports it, and every stage's key holds the code the config imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inferscale.scaling.subsets import Vote

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
        Strategy("rebase", "REBASE", "tree", True, "width", "D"),
        Strategy("mcts", "MCTS", "tree", True, "generated nodes", "P"),
        Strategy("beam_search", "beam search", "tree", True, "beams", "X"),
    )
}


def of_kind(kind: Kind) -> tuple[str, ...]:
    """The names of the strategies of one kind, in registry order."""
    return tuple(name for name, s in STRATEGIES.items() if s.kind == kind)


TREE_STRATEGIES = of_kind("tree")
POOL_STRATEGIES = of_kind("pool")
