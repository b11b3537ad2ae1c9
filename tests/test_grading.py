import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inferscale import grading
from inferscale.grading import (
    MAX_VERIFY_CHARS,
    MAX_VERIFY_DEPTH,
    Grader,
    answer_classes,
    extract_answer,
    is_equivalent,
)

# Sympy does not finish expanding this within 20 s (measured, math-verify 0.9), yet it is within
# every bound that keeps an answer from math-verify.
SLOW_PRED = r"(x+y+z)^{300}"


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    g = Grader(timeout_s=5.0)
    yield g
    g.close()


# --- extraction ------------------------------------------------------------------------------


def test_extract_from_step_format() -> None:
    solution = (
        "Step 1: The answer is: 7 is a guess we check. ки\n"
        "Step 2: 3 + 4 = 7, so x = \\frac{7}{2}. ки\n"
        "Step 3: The answer is: \\frac{7}{2} ки\n"
    )
    assert extract_answer(solution) == "\\frac{7}{2}"


def test_extract_answer_without_tag_or_with_period() -> None:
    assert extract_answer("Step 1: 2+2=4. The answer is: 4.") == "4"
    assert extract_answer("Step 1: The answer is: 4ки") == "4"
    assert extract_answer("Step 1: The answer is: 4 ки\nStep 2: garbage") == "4"


def test_partial_solution_has_no_answer() -> None:
    assert extract_answer("Step 1: Let x = 3. ки\nStep 2: Then 2x = ") is None
    assert extract_answer("Step 1: x = 3. ки\nStep 2: The answer is:") is None


def test_extract_with_custom_phrase_and_tag() -> None:
    text = "1. We add <s>\n2. Final answer: 12 <s>\n"
    assert extract_answer(text, answer_phrase="Final answer:", tag=" <s>") == "12"
    assert extract_answer(text) is None


def test_extract_last_boxed_with_nested_braces() -> None:
    text = r"First $\boxed{1}$, then $x = \boxed{\dfrac{\sqrt{2}}{2}}$."
    assert extract_answer(text) == r"\dfrac{\sqrt{2}}{2}"
    assert extract_answer(r"so \fbox{ 5 }") == "5"
    assert extract_answer(r"unbalanced \boxed{\frac{1}{2}") is None


def test_answer_phrase_wins_over_boxed() -> None:
    assert extract_answer("Step 1: \\boxed{3} ки\nStep 2: The answer is: 4 ки") == "4"


def test_extract_gsm8k() -> None:
    assert extract_answer("He pays 1,000 + 234.\n#### 1,234") == "1234"
    assert extract_answer("#### -5") == "-5"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So the answer is 12.", "12"),
        ("THE ANSWER IS -3", "-3"),
        ("Hence the final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("The final answer is $$x^2$$", "x^2"),
        ("the answer is 3.5. Then we stop.", "3.5"),
        ("First the answer is 4, no.\nSo the answer is: 5 ки\n", "5"),  # the last one
        ("Step 1: the answer is 7ки", "7"),  # cut at the tag
        ("The answer is\n5", None),  # on its line only
        ("The answer is.", None),
        ("My answers isn't 4", None),
    ],
)
def test_extract_answer_is_in_free_text(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


def test_explicit_marks_win_over_answer_is() -> None:
    # The format's phrase, \boxed and #### each mark the answer; "answer is" only ends a sentence.
    assert extract_answer("The answer is 3.\nThe answer is: 4") == "4"
    assert extract_answer("The final answer is $\\boxed{6}$.") == "6"
    assert extract_answer("So the answer is \\boxed{7} or 8") == "7"
    assert extract_answer("The answer is 9.\n#### 10") == "10"
    custom = "Step 1: so the answer is 5 <s>\nStep 2: Final answer: 6 <s>\n"
    assert extract_answer(custom, answer_phrase="Final answer:", tag=" <s>") == "6"
    assert extract_answer(custom.split("\n")[0], answer_phrase="Final answer:", tag=" <s>") == "5"


# --- equivalence -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac{1}{2}", r"\frac12"),
        (r"\boxed{3}", "3"),
        ("$3$", "3"),
        ("(1, 2)", "(1,2)"),
        ("[0,1)", "[0, 1)"),
        (r"\left[0,1\right)", "[0,1)"),
        ("x+1", "1+x"),
        (r"\{2,1\}", r"\{1,2\}"),
    ],
)
def test_equivalent(grader: Grader, pred: str, gold: str) -> None:
    assert grader.equivalent(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("0.6", r"\frac{1}{2}"),
        (r"\frac{1}{3}", r"\frac12"),
        (r"\boxed{4}", "3"),
        ("(2,1)", "(1,2)"),
        ("(1,2,3)", "(1,2)"),
        ("[0,1]", "[0,1)"),
        (r"\rightarrow", r"\leftarrow"),
        ("x-1", "1+x"),
        ("", ""),
    ],
)
def test_not_equivalent(grader: Grader, pred: str, gold: str) -> None:
    assert not grader.equivalent(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        # Math-verify drops text (units) entirely, so even different units match.
        ("5", r"5\text{ cm}"),
        (r"5\text{ m}", r"5\text{ cm}"),
        ("5", r"5^\circ"),
        # It accepts a percentage both as the bare number and as the fraction.
        ("10", r"10\%"),
        ("0.1", r"10\%"),
        # An open interval with two numbers also matches the set of them.
        (r"\{1,2\}", "(1,2)"),
        # The value matches an equation assigning it.
        ("x = 2", "2"),
    ],
)
def test_math_verify_leniencies(grader: Grader, pred: str, gold: str) -> None:
    assert grader.equivalent(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("$1,234", "1234.0", True),
        (r"\$ 1,234.50", "1234.5", True),
        (r"\boxed{3}", "3.", True),
        (r"\dfrac{1}{2}", r"\frac{1}{2}", True),
        ("[0, 1)", "[0,1)", True),
        ("-2", "-2.00", True),
        # Plain numbers compare exactly, unlike math-verify's rounding to 6 decimals.
        ("0.3333333", "0.333333", False),
        ("7", "8", False),
    ],
)
def test_fast_path_needs_no_math_verify(
    pred: str, gold: str, expected: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # With a zero timeout every math-verify call would time out: False and a warning.
    g = Grader(timeout_s=0.0)
    with caplog.at_level(logging.WARNING, logger="inferscale.grading"):
        assert g.equivalent(pred, gold) is expected
    assert not caplog.records
    g.close()


def test_numbers_of_any_length_compare_exactly() -> None:
    # Python's int() refuses strings over 4,300 digits; a number that long is still a number.
    g = Grader(timeout_s=0.0)  # every comparison here is the fast path's
    huge = "9" * 4301
    assert not g.equivalent(huge, "1")
    assert not g.equivalent(extract_answer("The answer is: " + huge), "1")
    assert g.equivalent(huge, huge + ".000")
    assert not g.equivalent(huge, "9" * 4300 + "8")
    assert g.equivalent("0." + "0" * 5000 + "1", "0." + "0" * 5000 + "10")
    assert not g.equivalent("0." + "0" * 5000 + "1", "0")
    g.close()


@pytest.mark.parametrize("depth", [3000, 100_000])
def test_deeply_nested_boxes_unwrap(depth: int) -> None:
    # One recursion per `\boxed{` overflowed Python's stack at 3,000; one scan per layer made
    # 100,000 layers quadratic.
    g = Grader(timeout_s=0.0)  # every comparison here is the fast path's
    nested = "\\boxed{" * depth + " $7$ " + "}" * depth
    assert g.equivalent(nested, "7")
    assert not g.equivalent(nested, "8")
    assert g.equivalent(extract_answer("The answer is: " + nested), "7.0")
    assert extract_answer("so " + nested) == "$7$"
    g.close()


@pytest.mark.parametrize(
    ("pred", "equals_itself"),
    [
        ("x+" * MAX_VERIFY_CHARS + "1", True),
        ("(" * (MAX_VERIFY_DEPTH + 1) + "1" + ")" * (MAX_VERIFY_DEPTH + 1), True),
        ("{" * 16 + "1" + "}" * 16, True),  # math-verify's parser: 53 s (measured)
        (r"\frac{1}{" * 50 + "2" + "}" * 50, True),
        (" \n\t ", False),  # no answer
        (r"\boxed{\,}", False),
    ],
    ids=["long", "deep-parens", "deep-braces", "deep-fracs", "whitespace", "empty-box"],
)
def test_answers_beyond_bounds_never_reach_math_verify(
    pred: str, equals_itself: bool, verify_calls: list[tuple[str, str]]
) -> None:
    g = Grader(timeout_s=0.0)  # a call would time out, and return None
    assert g.verdict(pred, "1") is False
    assert g.verdict("1", pred) is False
    assert g.verdict(pred, r"\frac{1}{2}") is False
    assert g.verdict(pred, pred) is equals_itself
    assert not verify_calls
    g.close()


def test_answer_equal_as_text_needs_no_math_verify(verify_calls: list[tuple[str, str]]) -> None:
    g = Grader(timeout_s=0.0)
    long = r"\frac{x}{2}+" * 100 + "x"
    assert g.equivalent(long, f"$\\boxed{{{long}}}$")
    assert g.equivalent(r"\left(\frac12, 3\right)", r"(\dfrac12,3)")
    assert not verify_calls
    g.close()


def test_an_answer_that_cannot_be_read_grades_as_text(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(s: str) -> str:
        raise RecursionError("unforeseen")

    monkeypatch.setattr(grading, "_unwrap", broken)
    g = Grader(timeout_s=0.0)
    with caplog.at_level(logging.WARNING, logger="inferscale.grading"):
        assert g.verdict("$1$", "1") is False
        assert g.verdict("1", "1") is True
    assert "cannot read answer" in caplog.text
    g.close()


@pytest.mark.parametrize(
    "pred",
    [
        r"9^{9^{9^{9}}}",
        r"9^{999999999}",
        r"(10^{10})!",
        r"\binom{10^{9}}{5 \cdot 10^{8}}",
        r"\int_0^1 x^{10^{9}} dx",
        r"100!!",
        r"2^{-9^{9}}",
    ],
)
def test_values_too_large_to_compute_are_refused(pred: str, grader: Grader) -> None:
    # Refused: False, where a timeout would give None (each takes sympy minutes or more).
    assert grader.verdict(pred, "1", timeout_s=60.0) is False


def test_an_answer_refused_as_too_large_is_not_sent_again(
    verify_calls: list[tuple[str, str]],
) -> None:
    g = Grader(timeout_s=60.0)
    tower = r"9^{9^{9^{9}}}"
    assert g.verdict(tower, "1") is False
    assert g.verdict(tower, "x") is False
    assert g.verdict(r"\frac{1}{2}", f"${tower}$") is False
    assert g.verdict(r"\frac{1}{2}", "0.5") is True
    assert [pred for pred, _ in verify_calls] == [rf"\boxed{{{tower}}}", r"\boxed{\frac{1}{2}}"]
    g.close()


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        (r"2^{10}", "1024"),
        (r"2^{2^{3}}", "256"),
        (r"\frac{10!}{9!}", "10"),
        ("(x+1)^{2}", "x^2+2x+1"),
    ],
)
def test_large_but_computable_values_still_verify(pred: str, gold: str, grader: Grader) -> None:
    assert grader.verdict(pred, gold) is True


def test_none_prediction_is_wrong(grader: Grader) -> None:
    assert not grader.equivalent(None, "1")
    assert not is_equivalent(None, "1")


def test_works_outside_the_main_thread(grader: Grader) -> None:
    pairs = [("0.5", r"\frac{1}{2}"), ("2x", "x+x"), ("(1,2)", "(2,1)"), ("y^2", "y*y")]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda pair: grader.equivalent(*pair), pairs))
    assert results == [True, True, False, True]


def test_default_grader() -> None:
    assert is_equivalent("0.5", r"\dfrac{1}{2}")
    assert not is_equivalent("0.5", r"\dfrac{1}{3}")


def test_slow_comparison_times_out_and_grader_recovers(caplog: pytest.LogCaptureFixture) -> None:
    g = Grader(timeout_s=1.0)
    assert g.equivalent("x+1", "1+x")  # the worker is up before timing
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="inferscale.grading"):
        assert g.verdict(SLOW_PRED, "1") is None
    elapsed = time.monotonic() - start
    assert elapsed < 1.0 + 2.0
    assert "timed out" in caplog.text and SLOW_PRED in caplog.text

    start = time.monotonic()
    assert not g.equivalent(SLOW_PRED, "1")  # cached, not re-run
    assert g.verdict(SLOW_PRED, "1") is None
    assert time.monotonic() - start < 0.1
    assert g.equivalent(r"\frac{2}{4}", "0.5")  # on a fresh worker
    g.close()


def test_close_stops_the_worker() -> None:
    g = Grader()
    g.equivalent("x+1", "1+x")
    assert g._worker is not None
    worker = g._worker.process
    assert worker.poll() is None
    g.close()
    assert worker.poll() is not None
    assert g.equivalent("2x", "x*2")  # restarts lazily
    g.close()


def _run_script(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    # Stderr to a file: the worker shares it, and waiting for a pipe would wait for the worker.
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        run = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=120,
        )
        stderr.seek(0)
        run.stderr = stderr.read()
    return run


def test_script_without_main_guard_runs_once(tmp_path: Path) -> None:
    # A multiprocessing "spawn" worker re-imported the caller's __main__: this script ran twice
    # and the worker never started.
    run = _run_script(
        tmp_path,
        r"""
        from inferscale.grading import Grader

        print("MARKER", flush=True)
        grader = Grader(timeout_s=30.0)
        print(grader.equivalent(r"\frac{1}{2}", "0.5"))
        """,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines.count("MARKER") == 1 and lines.count("True") == 1, run.stdout


def _gone(pid: int) -> bool:
    """The process has exited: reaped, or a zombie whose new parent does not reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_worker_exits_when_its_parent_dies(tmp_path: Path) -> None:
    # The parent dies without cleanup (os._exit, like SIGKILL); the idle worker sees end of input.
    run = _run_script(
        tmp_path,
        """
        import os
        from inferscale.grading import Grader

        grader = Grader(timeout_s=60.0)
        assert grader.equivalent("x+1", "1+x")
        print(grader._worker.process.pid, flush=True)
        os._exit(0)
        """,
    )
    assert run.returncode == 0, run.stderr
    pid = int(run.stdout)
    deadline = time.monotonic() + 10.0
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)


# --- voting ----------------------------------------------------------------------------------


def test_answer_classes_in_order_of_first_appearance(grader: Grader) -> None:
    answers = ["3", None, r"\frac12", "0.5", "3.0", r"\boxed{3}", "(1,2)", "(1, 2)", "x", None]
    expected = [0, None, 1, 1, 0, 0, 2, 2, 3, None]
    assert answer_classes(answers, grader.verdict) == expected
    assert answer_classes(answers, grader.equivalent) == expected
    assert answer_classes(answers) == expected


def test_answer_classes_edge_cases() -> None:
    assert answer_classes([]) == []
    assert answer_classes([None, None]) == [None, None]
    assert answer_classes(["a", "b", "a"], lambda x, y: x == y) == [0, 1, 0]


class _Counted:
    """An equivalence that answers `result` and records what it was asked."""

    def __init__(self, result: bool | None = False) -> None:
        self.result = result
        self.asked: list[tuple[str, str]] = []

    def __call__(self, pred: str, gold: str) -> bool | None:
        self.asked.append((pred, gold))
        return self.result


def test_answer_classes_bounds_a_pools_comparisons() -> None:
    # 32 answers no string or number check can tell apart: all pairs would be 496 comparisons.
    answers = [f"x+{i}y" for i in range(32)]
    equivalent = _Counted()
    classes = answer_classes(answers, equivalent)
    assert len(equivalent.asked) == 8 * 32
    # Once the budget is spent, what was not compared counts as not equivalent: a class each.
    assert classes == list(range(32))
    assert answer_classes(answers, _Counted()) == classes  # the same every time


def test_answer_classes_stops_verifying_after_timeouts() -> None:
    equivalent = _Counted(result=None)  # every call times out
    classes = answer_classes([f"x+{i}y" for i in range(32)], equivalent, max_timeouts=2)
    assert len(equivalent.asked) == 2
    assert classes == list(range(32))


def test_answer_classes_stops_verifying_an_answer_that_timed_out() -> None:
    def equivalent(pred: str, gold: str) -> bool | None:
        asked.append((pred, gold))
        return None if "slow" in (pred, gold) else False

    asked: list[tuple[str, str]] = []
    assert answer_classes(["a", "b", "c", "slow", "d"], equivalent) == [0, 1, 2, 3, 4]
    # `slow` is not compared again after timing out against a, neither with b and c nor with d.
    assert asked == [
        ("b", "a"),
        ("c", "a"),
        ("c", "b"),
        ("slow", "a"),
        ("d", "a"),
        ("d", "b"),
        ("d", "c"),
    ]


def test_answer_classes_compares_answers_reading_the_same_once() -> None:
    equivalent = _Counted(result=True)
    pool = ["x+y", "$x + y$", r"\boxed{x+y}", "y+x", "x+y", "y + x"]
    assert answer_classes(pool, equivalent) == [0, 0, 0, 0, 0, 0]
    assert equivalent.asked == [("y+x", "x+y")]


def test_answer_classes_with_no_budget_uses_text_and_numbers_only() -> None:
    equivalent = _Counted(result=True)
    pool = ["3", "3.0", r"\frac{6}{2}", "$3$", r"\boxed{3}"]
    assert answer_classes(pool, equivalent, verify_calls_per_answer=0) == [0, 0, 1, 0, 0]
    assert not equivalent.asked


def test_answer_classes_keep_oversized_answers_from_the_equivalence() -> None:
    equivalent = _Counted(result=True)
    huge = "x" * (MAX_VERIFY_CHARS + 1)
    assert answer_classes([huge, "x", huge, huge + "y"], equivalent) == [0, 1, 0, 2]
    assert not equivalent.asked
