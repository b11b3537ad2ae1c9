"""The math-verify worker process of `inferscale.grading.Grader`.

The grader runs this file as a script, `python -P grading_worker.py`, so the worker imports
neither the caller's `__main__` nor the `inferscale` package, only the standard library and
math-verify. It speaks one JSON object a line: after importing math-verify it writes
`{"ready": true}`, then answers each request `{"pred": ..., "gold": ...}` (LaTeX the grader has
already wrapped in `\\boxed{}`) with `{"ok": true, "result": bool}` or
`{"ok": false, "error": str}`. It exits at end of input, which is also what it sees when its
parent dies (once done with the comparison at hand: sympy's big-integer arithmetic holds the GIL,
so no watchdog thread could end it sooner).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import IO, Any


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
            gold = parse(request["gold"], parsing_timeout=None)
            pred = parse(request["pred"], parsing_timeout=None)
            response: dict[str, Any] = {
                "ok": True,
                "result": bool(verify(gold, pred, timeout_seconds=None)),
            }
        except Exception as e:  # reported to the parent, which counts the pair as wrong
            response = {"ok": False, "error": repr(e)}
        _send(out, response)


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
