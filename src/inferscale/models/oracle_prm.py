"""Oracle PRMs for the synthetic task: exact step validity as a score, exact or with set noise.

The exact oracle scores a prefix 1.0 when it is valid (`data.step_validity`) and 0.0 otherwise.
The noisy oracle has a set step AUC against prefix validity: binormal scores. Each prefix (a
node of a search) draws z ~ N(0, 1) from a hash of (seed, question, its steps), so a node gets
the same score whatever batch, order or run asks for it; its score is Phi(z + d/2) when valid and
Phi(z - d/2) otherwise, with d = sqrt(2) * Phi^-1(auc), so that a valid and an invalid prefix are
ordered right with probability Phi(d / sqrt(2)) = auc: the expected step AUC. At auc = 1.0 the
noisy oracle is the exact one.

How close one draw gets: on the 5,000 distinct held-out prefixes of tests/test_oracle_prm.py
(46% valid), over seeds 0-19, the realized AUC has mean 0.7004 / 0.8002 / 0.8999 / 0.9497 and
standard deviation 0.0069 / 0.0060 / 0.0044 / 0.0030 at auc 0.7 / 0.8 / 0.9 / 0.95 (the
i.i.d. standard error); 2 seeds of 20 land more than 0.01 off at 0.7 and at 0.8.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from statistics import NormalDist

from inferscale.data.step_validity import check_modulus, prefix_validity

_NORMAL = NormalDist()


def separation(auc: float) -> float:
    """The distance d between the valid and the invalid prefixes' mean z that gives `auc`."""
    _check_auc(auc)
    if auc == 1.0:
        return math.inf
    return math.sqrt(2) * _NORMAL.inv_cdf(auc)


def node_noise(seed: int, question: str, steps: Sequence[str]) -> float:
    """A standard normal draw that depends on the node (question and steps) and the seed only."""
    key = json.dumps([seed, question, list(steps)], ensure_ascii=False)
    digest = hashlib.sha256(key.encode()).digest()
    uniform = (int.from_bytes(digest[:8], "little") + 0.5) / 2**64
    return _NORMAL.inv_cdf(uniform)


def oracle_scores(
    question: str,
    steps: Sequence[str],
    modulus: int,
    answer_phrase: str,
    auc: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """The oracle's score of each prefix of a solution (steps 1..k for each k)."""
    valid = prefix_validity(question, steps, modulus, answer_phrase)
    d = separation(auc)
    if math.isinf(d):
        return [1.0 if v else 0.0 for v in valid]
    return [
        _NORMAL.cdf(node_noise(seed, question, steps[: k + 1]) + (d / 2 if v else -d / 2))
        for k, v in enumerate(valid)
    ]


class OracleScorer:
    """The oracle behind the search's scorer interface (`search.tree.Scorer`)."""

    def __init__(self, modulus: int, answer_phrase: str, auc: float = 1.0, seed: int = 0) -> None:
        check_modulus(modulus)
        if not answer_phrase.strip():
            raise ValueError("oracle PRM: the answer phrase is empty; give the task's own")
        _check_auc(auc)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"oracle PRM: seed must be an integer, got {seed!r}")
        self.modulus = modulus
        self.answer_phrase = answer_phrase
        self.auc = auc
        self.seed = seed

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        return [
            oracle_scores(question, steps, self.modulus, self.answer_phrase, self.auc, self.seed)
            for question, steps in items
        ]

    def close(self) -> None:
        pass  # nothing held


def _check_auc(auc: float) -> None:
    if isinstance(auc, bool) or not isinstance(auc, int | float) or not 0.5 < auc <= 1.0:
        raise ValueError(
            f"oracle PRM: auc must be above 0.5 and at most 1.0 (1.0: the exact oracle), "
            f"got {auc!r}"
        )
