"""Answer extraction and equivalence grading of math solutions.

Equivalence runs a cheap string/number check first and math-verify only when that is not
decisive. Math-verify's own timeouts use `signal.alarm`, which fails outside the main thread, so
they are off and math-verify runs in a worker process that is killed when a call runs too long
(sympy can spin for minutes on inputs such as `9^{9^{9^{9}}}`). The worker is a spawned process,
so a script that grades at import time needs the usual `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
import threading
import weakref
from collections.abc import Callable
from fractions import Fraction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

logger = logging.getLogger(__name__)

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LATEX_NOISE = re.compile(r"\\(?:left|right)(?![a-zA-Z])|\\[!,;: ]|\s+")
_STARTUP_TIMEOUT_S = 60.0


# --- extraction ------------------------------------------------------------------------------


def extract_answer(
    text: str, answer_phrase: str = "The answer is:", tag: str = " ки"
) -> str | None:
    """The final answer of a solution: answer phrase, else last `\\boxed{}`, else GSM8K `####`."""
    for extract in (
        lambda: _after_phrase(text, answer_phrase, tag),
        lambda: _last_boxed(text),
        lambda: _after_hashes(text),
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


def _last_boxed(text: str) -> str | None:
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
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
    """Drop surrounding whitespace, `$...$` and a `\\boxed{}` enclosing the whole answer."""
    s = s.strip()
    if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s.strip("$").strip()
    match = _BOXED.match(s)
    if match and _closing_brace(s, match.end()) == len(s) - 1:
        return _unwrap(s[match.end() : -1])
    return s


def _normalise(s: str) -> str:
    s = _LATEX_NOISE.sub("", _unwrap(s))
    return _strip_period(s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac"))


def _as_number(s: str) -> Fraction | None:
    s = s.removeprefix("\\$").removeprefix("$")
    if not _NUMBER.fullmatch(s):
        return None
    return Fraction(s.replace(",", ""))


def _fast_equivalent(pred: str, gold: str) -> bool | None:
    """True/False when decidable without math-verify, else None."""
    p, g = _normalise(pred), _normalise(gold)
    if p == g:
        return bool(p)
    p_num, g_num = _as_number(p), _as_number(g)
    if p_num is not None and g_num is not None:
        return p_num == g_num
    return None


# --- math-verify in a worker process ---------------------------------------------------------


def _as_latex(s: str) -> str:
    """Math-verify only reads LaTeX inside delimiters; `\\boxed{}` is its preferred one."""
    s = _unwrap(s)
    return f"\\boxed{{{s}}}"


def _worker_main(conn: Connection) -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" warning
    from math_verify import parse, verify

    conn.send("ready")
    while True:
        try:
            pred, gold = conn.recv()
        except EOFError:  # parent closed the pipe or died
            return
        # Errors inside parse/verify are caught by math-verify; anything else ends the worker,
        # which the parent sees as EOF and handles like a timeout.
        gold_parsed = parse(_as_latex(gold), parsing_timeout=None)
        pred_parsed = parse(_as_latex(pred), parsing_timeout=None)
        conn.send(bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)))


def _stop_worker(process: BaseProcess, conn: Connection) -> None:
    conn.close()
    process.kill()
    process.join()


def _short(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[:n] + "..."


class Grader:
    """Equivalence of a predicted and a gold answer, cached, math-verify under a process timeout.

    The worker starts on the first call that needs math-verify, is replaced after a timeout, and
    is stopped by `close()`, by garbage collection, or at interpreter exit.
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._cache: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._stop: weakref.finalize | None = None

    def equivalent(self, pred: str | None, gold: str, timeout_s: float | None = None) -> bool:
        if pred is None:
            return False
        key = (pred, gold)
        if key not in self._cache:
            result = _fast_equivalent(pred, gold)
            if result is None:
                result = self._math_verify(pred, gold, timeout_s)
            self._cache[key] = result
        return self._cache[key]

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _math_verify(self, pred: str, gold: str, timeout_s: float | None) -> bool:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            conn = self._conn or self._start()
            try:
                conn.send((pred, gold))
                if conn.poll(timeout_s):
                    return conn.recv()
                reason = f"timed out after {timeout_s:g}s"
            except (EOFError, OSError) as e:
                reason = f"worker failed ({e!r})"
            logger.warning(
                "math-verify %s on pred=%r gold=%r; counted as not equivalent",
                reason,
                _short(pred),
                _short(gold),
            )
            self._kill()
            return False

    def _start(self) -> Connection:
        ctx = multiprocessing.get_context("spawn")
        conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(child_conn,), daemon=True)
        process.start()
        # Without the parent's copy of the child's end, the worker sees EOF when the parent dies.
        child_conn.close()
        self._conn = conn
        self._stop = weakref.finalize(self, _stop_worker, process, conn)
        try:
            ready = conn.poll(_STARTUP_TIMEOUT_S) and conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._kill()
            raise RuntimeError("math-verify worker did not start")
        return conn

    def _kill(self) -> None:
        if self._stop is not None:
            self._stop()
        self._conn = None
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
    equivalent: Callable[[str, str], bool] = is_equivalent,
) -> list[int | None]:
    """Equivalence-class ids (numbered by first appearance) of answers; None for None answers.

    Each answer is compared (as the prediction) with the first member of every existing class.
    """
    representatives: list[str] = []
    classes: list[int | None] = []
    for answer in answers:
        if answer is None:
            classes.append(None)
            continue
        match = next((i for i, rep in enumerate(representatives) if equivalent(answer, rep)), None)
        if match is None:
            representatives.append(answer)
            match = len(representatives) - 1
        classes.append(match)
    return classes
