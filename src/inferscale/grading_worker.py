"""The math-verify worker process of `inferscale.grading.Grader`.

The grader runs this file as a script, `python -P grading_worker.py`, so the worker imports
neither the caller's `__main__` nor the `inferscale` package, only the standard library and
math-verify. It speaks one JSON object a line: after importing math-verify it writes
`{"ready": true}`, then answers each request `{"pred": ..., "gold": ...}` (LaTeX the grader has
already wrapped in `\\boxed{}`) with `{"ok": true, "result": bool}` or
`{"ok": false, "error": str}`, with `"too_large": "pred"` (or `"gold"`) where that expression's
value would be too large to compute (see `_check_size`). It exits at end of input, which is also
what it sees when its parent dies (once done with the comparison at hand: sympy's big-integer
arithmetic holds the GIL, so no watchdog thread could end it sooner).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from typing import IO, Any

# Sympy computes integer powers, factorials and binomials exactly, so a short answer such as
# `9^{9^{9}}` or `(10^{10})!` keeps it busy for minutes (measured). Expressions whose
# value could have more digits than this, or with a symbol raised to a power over
# `_MAX_SYMBOLIC_EXPONENT` (`x^{10^{9}}`), are refused outright: the same answer is refused
# every time, where a timeout depends on the machine's load. MATH's answers stay far below both.
_MAX_DIGITS = 10_000
_MAX_SYMBOLIC_EXPONENT = 1_000
_LOG10_2 = math.log10(2)


class _TooLarge(Exception):
    pass


def main() -> None:
    # Ctrl-C reaches the whole process group; the parent handles it and stops the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Responses get a private copy of stdout; stray prints (from sympy, ...) go to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" warning
    from math_verify import parse, verify

    _send(out, {"ready": True})
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            # Math-verify's own timeouts use `signal.alarm`; the parent times calls instead.
            parsed = {side: parse(request[side], parsing_timeout=None) for side in ("gold", "pred")}
            response = _refusal(parsed) or {
                "ok": True,
                "result": bool(verify(parsed["gold"], parsed["pred"], timeout_seconds=None)),
            }
        except Exception as e:  # reported to the parent, which counts the pair as wrong
            response = {"ok": False, "error": repr(e)}
        _send(out, response)


def _refusal(parsed: dict[str, list]) -> dict[str, Any] | None:
    """The response for a side too large to compute, if any; it tells the parent which side, so
    that it need not send that answer again."""
    for side, exprs in parsed.items():
        try:
            for expr in exprs:
                _check_size(expr)
        except _TooLarge as e:
            return {"ok": False, "error": f"too large to compute: {e}", "too_large": side}
    return None


def _check_size(expr: Any) -> float | None:
    """An upper bound of the decimal digits of the numbers sympy would compute for `expr` (for a
    fraction, of its numerator and denominator); None when `expr` has free symbols. Raises
    `_TooLarge` where a part of `expr` is beyond the bounds above."""
    import sympy
    from sympy.matrices import MatrixBase

    if isinstance(expr, sympy.Rational):
        return math.log10(max(abs(expr.p), expr.q))  # math.log10 takes ints of any size
    if isinstance(expr, sympy.Float):
        _sign, _mantissa, exponent, bits = expr._mpf_
        return abs(exponent + bits) * _LOG10_2
    if isinstance(expr, MatrixBase):  # a (mutable) matrix is not a sympy.Basic
        args: tuple = tuple(expr)
    elif isinstance(expr, sympy.Basic):
        if expr.is_Atom:
            return 1.0 if expr.is_number else None  # pi, E, I, ... or a symbol
        args = expr.args
    else:
        return None  # the answer's string, ...
    digits = [_check_size(arg) for arg in args]  # every part is checked
    if isinstance(expr, sympy.Pow):
        return _power_digits(*digits)
    if None in digits:
        return None
    if _grows_like_factorial(expr):
        # n! <= n^n, binomial(n, k) <= 2^n, ...: with n < 10^d, at most d * 10^d digits.
        return _bounded(max(digits) * _exp10(max(digits)), type(expr).__name__)
    if isinstance(expr, sympy.Mul):
        return _bounded(sum(digits), "a product")
    if isinstance(expr, sympy.Add):
        return _bounded(max(digits) + math.log10(len(digits)), "a sum")
    return max(digits, default=1.0)


def _power_digits(base: float | None, exponent: float | None) -> float | None:
    if exponent is None:
        return None  # sympy leaves a symbolic power as it is
    # An exponent of `exponent` digits is at most 10^exponent in size.
    if base is None:
        if _exp10(exponent) > _MAX_SYMBOLIC_EXPONENT:
            raise _TooLarge(f"a symbol to a power of over {_MAX_SYMBOLIC_EXPONENT}")
        return None
    if base == 0.0:
        return 0.0  # 1 (or 0) to any power
    return _bounded(base * _exp10(exponent), "a power")


def _grows_like_factorial(expr: Any) -> bool:
    import sympy

    return isinstance(expr, sympy.gamma) or type(expr).__module__.startswith(
        "sympy.functions.combinatorial."
    )


def _exp10(digits: float) -> float:
    return math.inf if digits > 300 else 10.0**digits


def _bounded(digits: float, what: str) -> float:
    if digits > _MAX_DIGITS:
        raise _TooLarge(f"{what} of up to {digits:.3g} digits")
    return digits


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
