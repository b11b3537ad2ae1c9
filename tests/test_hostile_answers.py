"""Answers a sampled policy may produce that once made grading raise or run for minutes.

Each grades to a definite bool, and a pool mixing them with ordinary answers is grouped into
classes within the pool's bounds. `bench/hostile_grading.py` times the pools built here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inferscale import grading
from inferscale.grading import (
    MAX_TIMEOUTS_PER_POOL,
    MAX_VERIFY_CHARS,
    MAX_VERIFY_DEPTH,
    VERIFY_CALLS_PER_ANSWER,
    Grader,
    answer_classes,
    extract_answer,
)

GOLD = "42"
MB = 1_000_000

# id: (answer, whether it is equivalent to GOLD)
HOSTILE: dict[str, tuple[str, bool]] = {
    # Over Python's 4,300-digit limit on int(): ValueError.
    "number-4301-digits": ("9" * 4301, False),
    "decimal-10000-places": ("0." + "0" * 10_000 + "1", False),
    # One recursion per layer: RecursionError.
    "boxed-nested-3000": ("\\boxed{" * 3000 + "42" + "}" * 3000 + "0", False),
    # Sympy computes these exactly, for minutes; the worker refuses them.
    "power-tower": (r"9^{9^{9^{9}}}", False),
    "power-huge-exponent": (r"9^{999999999}", False),
    "factorial-of-power": (r"(10^{10})!", False),
    "binomial-huge": (r"\binom{10^{9}}{5 \cdot 10^{8}}", False),
    "factorial-chain": ("3!!!!!!", False),
    "integral-huge-exponent": (r"\int_0^1 x^{10^{9}} dx", False),
    "symbol-huge-exponent": (r"x^{99999}", False),
    # Math-verify's parser slows down with nesting: kept from it.
    "parentheses-nested-5000": ("(" * 5000 + "42" + ")" * 5000, False),
    "braces-nested-5000": ("{" * 5000 + "42" + "}" * 5000, False),
    "frac-nested-500": (r"\frac{1}{" * 500 + "2" + "}" * 500, False),
    "sqrt-nested-200": (r"\sqrt{" * 200 + "2" + "}" * 200, False),
    "left-right-nested-200": (r"\left(" * 200 + "42" + r"\right)" * 200, False),
    # Large: kept from math-verify, compared as text.
    "sum-1mb": ("1+" * (MB // 2) + "1", False),
    "letters-1mb": ("x" * MB, False),
    "backslashes-100k": ("\\" * 100_000, False),
    "matrix-30x30": (
        r"\begin{pmatrix}" + r"\\".join(["&".join(["1"] * 30)] * 30) + r"\end{pmatrix}",
        False,
    ),
    "text-10k": (r"\text{" + "a" * 10_000 + "}", False),
    # The gold itself, padded with a megabyte of whitespace.
    "gold-padded-1mb": ("$\\boxed{42}$" + " " * MB, True),
    # Bytes and characters JSON and LaTeX do not expect.
    "nul-bytes": ("4\x002", False),
    "lone-surrogate": ("\ud800", False),
    "undecodable-bytes": ("4\udcff2", False),
    "dollars-only": ("$" * 1000, False),
    "whitespace-only": (" \n\t ", False),
    "empty-box": (r"\boxed{}", False),
    # LaTeX sympy has no value for, or cannot parse.
    "unclosed-frac": (r"\frac{", False),
    "unclosed-environment": (r"\begin{pmatrix} 1 & 2", False),
    "unknown-macro": (r"\foo{42}", False),
    "file-input": (r"\input{/etc/passwd}", False),
    "limit-without-body": (r"\lim_{x\to\infty}", False),
    "divergent-sum": (r"\sum_{n=1}^{\infty} n", False),
    "division-by-zero": (r"\frac{1}{0}", False),
    "infinity-minus-infinity": (r"\infty - \infty", False),
    "exponent-overflow": ("1e999999999", False),
}
# Within every bound, yet sympy does not finish expanding it within 20 s (measured): it costs
# the grader's timeout, so only the tests below that are about timeouts use it.
SLOW = r"(x+y+z)^{300}"

NORMAL = ["42", r"\frac{84}{2}", "42.0", "41", "x+1", "1+x", r"\sqrt{2}", "(1,2)", None]


def hostile_pool(size: int = 32, slow: bool = True) -> list[str | None]:
    """`size` samples: three answers equivalent to GOLD (one by math-verify only), then the
    hostile answers in the order above, with the slow one in the middle (if `slow`)."""
    hostile = [answer for answer, _ in HOSTILE.values()]
    pool: list[str | None] = list(NORMAL[:3])
    pool += [hostile[i % len(hostile)] for i in range(size - len(pool))]
    if slow:
        pool[len(pool) // 2] = SLOW
    return pool


def normal_pool(size: int = 32) -> list[str | None]:
    """`size` samples of ordinary answers, with repeats, as a policy samples them."""
    return [NORMAL[i % len(NORMAL)] for i in range(size)]


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    # No hostile answer comes near this: math-verify refuses or answers within a second or two.
    g = Grader(timeout_s=30.0)
    yield g
    g.close()


@pytest.fixture(scope="module")
def quick_grader() -> Iterator[Grader]:
    # For the slow answer, which costs the timeout each time it is compared.
    g = Grader(timeout_s=2.0)
    yield g
    g.close()


def _within_bounds(latex: str) -> bool:
    bare = latex.removeprefix("\\boxed{").removesuffix("}")
    return len(bare) <= MAX_VERIFY_CHARS and grading._nesting(bare) <= MAX_VERIFY_DEPTH


@pytest.mark.parametrize(("answer", "expected"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_answer_grades(
    answer: str, expected: bool, grader: Grader, verify_calls: list[tuple[str, str]]
) -> None:
    assert grader.equivalent(answer, GOLD) is expected
    assert grader.equivalent(GOLD, answer) is expected
    assert grader.equivalent(answer, answer) is bool(grading._prepare(answer).text)
    # Refused (False) or compared (True/False); no hostile answer here runs into the timeout.
    assert grader.verdict(answer, GOLD) is expected
    assert all(_within_bounds(pred) and _within_bounds(gold) for pred, gold in verify_calls)


@pytest.mark.parametrize(("answer", "expected"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_answer_in_a_solution(answer: str, expected: bool, grader: Grader) -> None:
    solution = f"Step 1: Let x = 2. ки\nStep 2: The answer is: {answer} ки\n"
    extracted = extract_answer(solution)
    assert extracted is None or isinstance(extracted, str)
    assert grader.equivalent(extracted, GOLD) is (expected and "\n" not in answer)
    boxed = extract_answer(f"Step 1: so $\\boxed{{{answer}}}$.")
    assert isinstance(grader.equivalent(boxed, GOLD), bool)


def test_slow_answer_counts_as_wrong(quick_grader: Grader) -> None:
    assert quick_grader.verdict(SLOW, GOLD) is None  # timed out
    assert quick_grader.equivalent(SLOW, GOLD) is False


def test_hostile_pool_stays_within_its_bounds(
    quick_grader: Grader, verify_calls: list[tuple[str, str]]
) -> None:
    pool = hostile_pool()
    timeouts = []

    def verdict(pred: str, gold: str) -> bool | None:
        result = quick_grader.verdict(pred, gold)
        if result is None:
            timeouts.append((pred, gold))
        return result

    classes = answer_classes(pool, verdict)
    assert len(classes) == len(pool)
    assert len(verify_calls) <= VERIFY_CALLS_PER_ANSWER * len(pool)
    assert len(timeouts) <= MAX_TIMEOUTS_PER_POOL
    assert all(_within_bounds(pred) and _within_bounds(gold) for pred, gold in verify_calls)
    # 42, \frac{84}{2} (by math-verify), 42.0 and the padded 42 are one class.
    gold_class = classes[0]
    assert classes[1] == classes[2] == gold_class
    padded = HOSTILE["gold-padded-1mb"][0]
    assert all(c == gold_class for a, c in zip(pool, classes) if a == padded)
    others = [c for a, c in zip(pool, classes) if a not in (padded, *NORMAL[:3])]
    assert gold_class not in others
    # The same answers, the same classes (the timed-out pairs are cached as timed out).
    assert answer_classes(pool, quick_grader.verdict) == classes


def test_normal_pool_classes(grader: Grader) -> None:
    classes = answer_classes(normal_pool(), grader.verdict)
    # 42 = 84/2 = 42.0; 41; x+1 = 1+x; sqrt(2); (1,2); no answer.
    assert classes[: len(NORMAL)] == [0, 0, 0, 1, 2, 2, 3, 4, None]
    assert classes[len(NORMAL) :] == (classes[: len(NORMAL)] * 4)[: 32 - len(NORMAL)]
