"""Answer extraction and equivalence grading of math solutions.

Equivalence runs a cheap string/number check first and math-verify only when that is not
decisive and both answers are within its bounds (`MAX_VERIFY_CHARS`, `MAX_VERIFY_DEPTH`); the
worker also refuses values too large to compute, such as `9^{9^{9^{9}}}`. Math-verify's own
timeouts use `signal.alarm`, which fails outside the main thread, so they are off and
math-verify runs in a worker process that is killed when a call runs too long (sympy can still
spin for minutes on inputs such as `(x+y+z)^{300}`); such a comparison counts as not
equivalent. Whatever an answer holds, grading it never raises. The worker is a plain subprocess
running `grading_worker.py` (not a multiprocessing one), so it never re-imports the caller's
`__main__`: scripts need no `if __name__ == "__main__":` guard, and a worker (re)start pays only
for importing math-verify.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "The answer is 5", "the final answer is $5$. I hope it is correct.": what instruction-tuned
# models write; read to the end of its sentence.
_ANSWER_IS = re.compile(r"\banswer\s+is\b:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.\s")
_BRACE = re.compile(r"[{}]")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LATEX_NOISE = re.compile(r"\\(?:left|right)(?![a-zA-Z])|\\[!,;: ]|\s+")
_STARTUP_TIMEOUT_S = 60.0
_WORKER_SCRIPT = Path(__file__).with_name("grading_worker.py")

# Bounds on what math-verify is given. Its LaTeX parser slows down exponentially with nested
# braces (16 deep: 53 s; measured, math-verify 0.9) and by a tenth of a second or more per nested
# parenthesis, and its work grows with an answer's length, while MATH's answers run to a few
# dozen characters (a 3x3 matrix of fractions: about 150) nesting a few deep. Answers beyond
# these (without enclosing `$`s and `\\boxed{}`s) are compared as text and plain numbers only:
# wrong unless the other answer reads the same.
MAX_VERIFY_CHARS = 256
MAX_VERIFY_DEPTH = 8  # of parentheses, brackets and braces together
# A pool's budget of math-verify calls in `answer_classes`.
VERIFY_CALLS_PER_ANSWER = 8
MAX_TIMEOUTS_PER_POOL = 2


# --- extraction ------------------------------------------------------------------------------


def extract_answer(
    text: str, answer_phrase: str = "The answer is:", tag: str = " ки"
) -> str | None:
    """The final answer of a solution: after the answer phrase, else in the last `\\boxed{}`,
    else after GSM8K's `####`, else after the last "(final) answer is" in any case.

    The more explicitly an answer is marked, the earlier it is read: the format's own phrase,
    then the delimited forms, then free text, whose end is only its sentence's or line's.
    """
    for extract in (
        lambda: _after_phrase(text, answer_phrase, tag),
        lambda: last_boxed(text),
        lambda: _after_hashes(text),
        lambda: _after_answer_is(text, tag),
    ):
        answer = extract()
        if answer:
            return answer
    return None


def _after_phrase(text: str, answer_phrase: str, tag: str) -> str | None:
    start = text.rfind(answer_phrase)
    if start < 0:
        return None
    rest = text[start + len(answer_phrase) :].split("\n", 1)[0]
    # The stripped tag also cuts `5ки`, where a tokenizer dropped the tag's space.
    rest = rest.split(tag.strip() or tag, 1)[0]
    return _strip_period(rest.strip())


def _after_answer_is(text: str, tag: str) -> str | None:
    last = deque(_ANSWER_IS.finditer(text), maxlen=1)  # not a list of every match
    if not last:
        return None
    rest = text[last[0].end() :].split("\n", 1)[0]
    rest = rest.split(tag.strip() or tag, 1)[0].strip()
    if rest.startswith("$"):
        math = rest.lstrip("$")
        end = math.find("$")
        rest = math[:end] if end >= 0 else math
    else:
        rest = _SENTENCE_END.split(rest, 1)[0]
    return _strip_period(rest.strip()) or None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; else None."""
    last = deque(_BOXED.finditer(text), maxlen=1)  # not a list of every match
    if not last:
        return None
    start = last[0].end()
    end = _closing_brace(text, start)
    return None if end is None else text[start:end].strip()


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the one just before `start`; None if unbalanced."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _after_hashes(text: str) -> str | None:
    start = text.rfind("####")
    if start < 0:
        return None
    rest = text[start + 4 :].split("\n", 1)[0].strip()
    return _THOUSANDS_COMMA.sub("", _strip_period(rest))


def _strip_period(s: str) -> str:
    return s[:-1].rstrip() if s.endswith(".") else s


# --- fast path -------------------------------------------------------------------------------


def _unwrap(s: str) -> str:
    """Drop surrounding whitespace, `$...$` and `\\boxed{}`s enclosing the whole answer."""
    # A loop over a window of `s` with the braces matched once: recursing per layer overflowed
    # the stack, and rescanning per layer was quadratic, on answers nesting thousands of boxes.
    lo, hi = _strip_span(s, 0, len(s))
    closing: dict[int, int] | None = None
    while True:
        if hi - lo >= 2 and s[lo] == "$" and s[hi - 1] == "$":
            while lo < hi and s[lo] == "$":
                lo += 1
            while hi > lo and s[hi - 1] == "$":
                hi -= 1
            lo, hi = _strip_span(s, lo, hi)
        match = _BOXED.match(s, lo, hi)
        if not match:
            break
        if closing is None:
            closing = _closing_braces(s)
        if closing.get(match.end() - 1) != hi - 1:
            break
        lo, hi = _strip_span(s, match.end(), hi - 1)
    return s[lo:hi]


def _strip_span(s: str, lo: int, hi: int) -> tuple[int, int]:
    """`s[lo:hi]`'s bounds without its surrounding whitespace (as `str.strip()`)."""
    while lo < hi and s[lo].isspace():
        lo += 1
    while hi > lo and s[hi - 1].isspace():
        hi -= 1
    return lo, hi


def _closing_braces(s: str) -> dict[int, int]:
    """The index of the brace closing each opening brace of `s` that is closed."""
    closing: dict[int, int] = {}
    opened: list[int] = []
    for brace in _BRACE.finditer(s):
        if brace.group() == "{":
            opened.append(brace.start())
        elif opened:
            closing[opened.pop()] = brace.start()
    return closing


def _as_number(s: str) -> Decimal | None:
    s = s.removeprefix("\\$").removeprefix("$")
    if not _NUMBER.fullmatch(s):
        return None
    # Decimal, not int or Fraction: Python refuses int strings over 4,300 digits, while a
    # Decimal reads any length exactly and compares exactly, whatever its context's precision.
    return Decimal(s.replace(",", ""))


def _nesting(s: str) -> int:
    depth = deepest = 0
    for c in s:
        if c in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")}]":
            depth = max(depth - 1, 0)
    return deepest


@dataclass(frozen=True)
class _Answer:
    """An answer as the comparisons read it, prepared once however many comparisons it is in."""

    bare: str  # without enclosing whitespace, `$`s and `\\boxed{}`s: what math-verify reads
    text: str  # `bare` without LaTeX spacing; answers equal as text are equivalent
    number: Decimal | None  # its value, if a plain number
    verifiable: bool  # within math-verify's bounds


def _prepare(answer: str) -> _Answer:
    try:
        bare = _unwrap(answer)
        text = _LATEX_NOISE.sub("", bare).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
        text = _strip_period(text)
        verifiable = len(bare) <= MAX_VERIFY_CHARS and _nesting(bare) <= MAX_VERIFY_DEPTH
        return _Answer(bare, text, _as_number(text), verifiable)
    except Exception:
        # Whatever an answer holds, grading must not raise: a resumed evaluation samples the
        # same answers again, so an answer that broke grading would break every retry.
        logger.warning("cannot read answer %r; compared as it is", _short(answer), exc_info=True)
        return _Answer(answer, answer, None, False)


def _decide(pred: _Answer, gold: _Answer) -> bool | None:
    """True/False when decidable without math-verify, else None."""
    if not pred.text or not gold.text:
        return False
    if pred.text == gold.text:
        return True
    if pred.number is not None and gold.number is not None:
        return pred.number == gold.number
    if not (pred.verifiable and gold.verifiable):
        return False
    return None


# --- math-verify in a worker process ---------------------------------------------------------


class _WorkerError(Exception):
    """The worker timed out, died, or broke the protocol; it has to be replaced."""


class _Worker:
    """A math-verify worker process (see `grading_worker`) and the parent's ends of its pipes."""

    def __init__(self) -> None:
        # `-P`: the worker script's folder (inferscale's) does not go on its `sys.path`.
        self.process = subprocess.Popen(
            [sys.executable, "-P", str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the parent's stderr, for math-verify's errors and a failed start
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin
        self._stdout = self.process.stdout.fileno()
        self._selector = selectors.DefaultSelector()  # not select.select: fds may be > 1023
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._buffer = b""

    def wait_ready(self, timeout_s: float) -> None:
        if self._receive(timeout_s) != {"ready": True}:
            raise _WorkerError("unexpected first message")

    def verify(self, pred: str, gold: str, timeout_s: float) -> dict[str, Any]:
        """The worker's response to one comparison, within `timeout_s` seconds of asking."""
        try:  # an idle worker reads at once, so this does not block
            self._stdin.write(json.dumps({"pred": pred, "gold": gold}).encode() + b"\n")
            self._stdin.flush()
        except OSError as e:
            raise _WorkerError(f"worker failed ({e!r})") from e
        response = self._receive(timeout_s)
        if not isinstance(response, dict) or "ok" not in response:
            raise _WorkerError(f"unexpected response {response!r}")
        return response

    def _receive(self, timeout_s: float) -> Any:
        """The next line from the worker, as JSON, within `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            if not self._selector.select(max(deadline - time.monotonic(), 0.0)):
                raise _WorkerError(f"timed out after {timeout_s:g}s")
            chunk = os.read(self._stdout, 1 << 16)
            if not chunk:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=1.0)
                raise _WorkerError(f"worker exited (code {self.process.returncode})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError as e:
            raise _WorkerError(f"unexpected output {_short(repr(line))}") from e

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self._selector.close()
        for pipe in (self._stdin, self.process.stdout):
            with contextlib.suppress(OSError):  # flushing a request the worker never read
                pipe.close()


def _short(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[:n] + "..."


class Grader:
    """Equivalence of a predicted and a gold answer, cached, math-verify under a process timeout.

    The worker starts on the first call that needs math-verify, is replaced after a timeout, and
    is stopped by `close()`, by garbage collection, or at interpreter exit; it also exits by
    itself when this process dies (at end of input, after the comparison at hand if any).
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._cache: dict[tuple[str, str], bool | None] = {}
        # Answers the worker refused as too large to compute, which it would refuse again.
        self._too_large: set[str] = set()
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._stop: weakref.finalize | None = None

    def equivalent(self, pred: str | None, gold: str, timeout_s: float | None = None) -> bool:
        """Whether `pred` is equivalent to `gold`. Never raises on an answer: a comparison that
        math-verify fails on, or does not finish within the timeout, counts as not equivalent."""
        return self.verdict(pred, gold, timeout_s) is True

    def verdict(self, pred: str | None, gold: str, timeout_s: float | None = None) -> bool | None:
        """As `equivalent`, but None where math-verify timed out (or its worker died)."""
        if pred is None:
            return False
        return self._verdict(_prepare(pred), _prepare(gold), timeout_s)

    def _verdict(self, pred: _Answer, gold: _Answer, timeout_s: float | None) -> bool | None:
        result = _decide(pred, gold)
        if result is not None:
            return result
        if pred.bare in self._too_large or gold.bare in self._too_large:
            return False
        key = (pred.bare, gold.bare)  # bounded in size, unlike the answers they come from
        if key not in self._cache:
            self._cache[key] = self._math_verify(pred.bare, gold.bare, timeout_s)
        return self._cache[key]

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _math_verify(self, pred: str, gold: str, timeout_s: float | None) -> bool | None:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            worker = self._worker or self._start()
            try:
                # Math-verify only reads LaTeX inside delimiters; `\\boxed{}` is its preferred one.
                response = worker.verify(f"\\boxed{{{pred}}}", f"\\boxed{{{gold}}}", timeout_s)
            except _WorkerError as e:
                self._kill()
                self._warn(str(e), pred, gold)
                return None
            if not response["ok"]:  # the worker is fine, the inputs are not
                self._warn(f"failed ({response.get('error')})", pred, gold)
                if "too_large" in response:
                    self._too_large.add({"pred": pred, "gold": gold}[response["too_large"]])
                return False
            return bool(response["result"])

    @staticmethod
    def _warn(reason: str, pred: str, gold: str) -> None:
        logger.warning(
            "math-verify %s on pred=%r gold=%r; counted as not equivalent",
            reason,
            _short(pred),
            _short(gold),
        )

    def _start(self) -> _Worker:
        worker = _Worker()
        self._worker = worker
        self._stop = weakref.finalize(self, worker.stop)
        try:
            worker.wait_ready(_STARTUP_TIMEOUT_S)
        except _WorkerError as e:
            self._kill()
            raise RuntimeError(f"math-verify worker did not start: {e}") from e
        return worker

    def _kill(self) -> None:
        if self._stop is not None:
            self._stop()
        self._worker = None
        self._stop = None


_default_grader: Grader | None = None


def default_grader() -> Grader:
    global _default_grader
    if _default_grader is None:
        _default_grader = Grader()
    return _default_grader


def is_equivalent(pred: str | None, gold: str, timeout_s: float = 5.0) -> bool:
    return default_grader().equivalent(pred, gold, timeout_s)


# --- voting ----------------------------------------------------------------------------------


def answer_classes(
    answers: list[str | None],
    equivalent: Callable[[str, str], bool | None] | None = None,
    *,
    verify_calls_per_answer: int = VERIFY_CALLS_PER_ANSWER,
    max_timeouts: int = MAX_TIMEOUTS_PER_POOL,
) -> list[int | None]:
    """Equivalence-class ids (numbered by first appearance) of answers; None for None answers.

    Each answer joins the first class whose first member it is equivalent to, else opens one.
    Answers equal as text or as plain numbers are equivalent without math-verify, and answers
    beyond its bounds (`MAX_VERIFY_CHARS`, `MAX_VERIFY_DEPTH`) are equivalent only so; an
    answer reading the same as an earlier one joins that one's class. The other pairs go to
    `equivalent` (default: the default grader's `verdict`, math-verify's), given the answers
    without enclosing `$`s and `\\boxed{}`s, within the pool's budget: at most
    `verify_calls_per_answer` times the pool's size in calls, of which at most `max_timeouts`
    answered None (math-verify timed out). Once either is spent, the pool's remaining such pairs
    count as not equivalent, as do all further pairs of an answer whose pair timed out, with the
    classes after and, as a class's first member, with later answers: an answer sympy chokes on
    tends to choke it against anything. So a pool costs at most that many calls and timeouts,
    one for each answer that takes too long, and the same answers get the same classes, unless
    a timeout falls otherwise.
    """
    verdict = equivalent or default_grader().verdict
    calls_left = verify_calls_per_answer * len(answers)
    timeouts_left = max_timeouts
    representatives: list[_Answer] = []
    timed_out_classes: set[int] = set()
    class_of_text: dict[str, int] = {}
    classes: list[int | None] = []
    for answer in answers:
        if answer is None:
            classes.append(None)
            continue
        prepared = _prepare(answer)
        match = class_of_text.get(prepared.text) if prepared.text else None
        timed_out = False
        for i, rep in enumerate(representatives if match is None else ()):
            result = _decide(prepared, rep)
            verify = not timed_out and i not in timed_out_classes
            if result is None and verify and calls_left > 0 and timeouts_left > 0:
                calls_left -= 1
                result = verdict(prepared.bare, rep.bare)
                if result is None:
                    timeouts_left -= 1
                    timed_out = True
            if result:
                match = i
                break
        if match is None:
            representatives.append(prepared)
            match = len(representatives) - 1
            if timed_out:
                timed_out_classes.add(match)
        if prepared.text:
            class_of_text.setdefault(prepared.text, match)
        classes.append(match)
    return classes
