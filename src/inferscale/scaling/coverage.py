"""Coverage (pass@k) from per-question counts of right samples.

pass@k of a question with c right samples among n is the unbiased estimator 1 - C(n-c, k) /
C(n, k) (Chen et al. 2021); a set of questions' coverage is its mean. Questions are kept grouped
by their (n, c) pair, which is all any coverage law or its bootstrap needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from inferscale.scaling.subsets import pass_at_k


@dataclass(frozen=True)
class Counts:
    """Questions grouped by their pool: `questions[g]` questions drew `n[g]` samples of which
    `c[g]` were right (weights, so that a bootstrap replicate is a Counts too)."""

    n: np.ndarray
    c: np.ndarray
    questions: np.ndarray

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, int]]) -> Counts:
        """From one (samples, right samples) pair per question."""
        grouped = Counter((int(n), int(c)) for n, c in pairs)
        if not grouped:
            raise ValueError("no questions to count")
        for n, c in grouped:
            if not 0 <= c <= n or n < 1:
                raise ValueError(f"a question with {c} right of {n} samples")
        keys = sorted(grouped)
        return cls(
            n=np.array([k[0] for k in keys]),
            c=np.array([k[1] for k in keys]),
            questions=np.array([grouped[k] for k in keys], dtype=float),
        )

    @property
    def total(self) -> float:
        return float(self.questions.sum())

    @property
    def min_samples(self) -> int:
        return int(self.n.min())

    def resample(self, rng: np.random.Generator) -> Counts:
        """A bootstrap replicate: as many questions drawn with replacement."""
        total = round(self.total)
        drawn = rng.multinomial(total, self.questions / self.questions.sum())
        return Counts(self.n, self.c, drawn.astype(float))


@dataclass(frozen=True)
class CoverageCurve:
    """Mean pass@k over questions at each k, with its standard error over questions."""

    ks: np.ndarray
    coverage: np.ndarray
    stderr: np.ndarray
    questions: int


def pass_at_k_table(counts: Counts, ks: Sequence[int]) -> np.ndarray:
    """pass@k of each group of `counts` (rows) at each k (columns)."""
    if max(ks) > counts.min_samples:
        raise ValueError(f"k up to {max(ks)} needs that many samples per question")
    groups = zip(counts.n, counts.c, strict=True)
    return np.array([[pass_at_k(int(n), int(c), int(k)) for k in ks] for n, c in groups])


def coverage_curve(counts: Counts, ks: Sequence[int]) -> CoverageCurve:
    return curve_from_table(pass_at_k_table(counts, ks), counts.questions, ks)


def curve_from_table(table: np.ndarray, questions: np.ndarray, ks: Sequence[int]) -> CoverageCurve:
    """The coverage curve of groups with pass@k `table` (see `pass_at_k_table`) weighted by how
    many questions each group holds."""
    total = float(questions.sum())
    mean = questions @ table / total
    if total > 1:
        stderr = np.sqrt(questions @ (table - mean) ** 2 / (total - 1) / total)
    else:
        stderr = np.zeros(len(ks))
    return CoverageCurve(np.asarray(ks), mean, stderr, round(total))


def failure_rows(counts: Counts, m: int) -> np.ndarray:
    """Per group of `counts`, the probability that m of its n samples, drawn without
    replacement, hold f = 0..m failures (a row per group; one-hot when m = n)."""
    if not 1 <= m <= counts.min_samples:
        raise ValueError(f"m={m} must be in 1..{counts.min_samples} (samples per question)")
    failures = np.arange(m + 1)
    groups = zip(counts.n, counts.c, strict=True)
    return np.array([stats.hypergeom.pmf(failures, int(n), int(n - c), m) for n, c in groups])


def failure_histogram(counts: Counts, m: int) -> np.ndarray:
    """How many questions fail f = 0..m times in m of their samples, in expectation over which m:
    with m = n, the observed counts; with m < n, what pools of m samples would show, which
    carries exactly the information of pass@1..m."""
    return counts.questions @ failure_rows(counts, m)
