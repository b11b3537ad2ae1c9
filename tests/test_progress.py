"""Progress bars: drawn on a terminal only (not in a log file, not under CI), and a training's
bar follows the steps its rank 0 records."""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import nullcontext

from inferscale.models import launch
from inferscale.models.training_progress import read_step, step_file, write_step
from inferscale.progress import bars_shown, stage_progress, terminal_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_are_shown_on_a_terminal_only_and_never_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert bars_shown(Terminal())
    assert not bars_shown(io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not bars_shown(Terminal())


def test_a_bar_is_drawn_on_the_terminal_and_nothing_is_written_elsewhere(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with stage_progress("evaluate-A")("greedy", 5, done=2) as advance:
        advance(3)
    drawn = terminal.getvalue()
    assert "evaluate-A greedy" in drawn and "2/5" in drawn
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with terminal_progress("greedy", 5) as advance:
        advance(5)
    assert log.getvalue() == ""


def test_the_step_file_holds_the_last_step(tmp_path):
    path = step_file(tmp_path)
    assert read_step(path) is None
    write_step(path, 3)
    write_step(path, 4)
    assert read_step(path) == 4 and sorted(p.name for p in tmp_path.iterdir()) == [".step"]


def test_a_trainings_bar_follows_the_steps_rank_zero_records(tmp_path, monkeypatch):
    bars = []

    def progress(description, total, done=0, unit="question"):
        advances: list[int] = []
        bars.append((description, total, unit, advances))
        return nullcontext(advances.append)

    monkeypatch.setattr(launch, "bars_shown", lambda: True)
    monkeypatch.setattr(launch, "terminal_progress", progress)
    monkeypatch.setattr(launch, "STEP_POLL_S", 0.05)
    # A stand-in for the launcher: it records steps 1 to 3 as rank 0 does, then exits.
    script = (
        "import sys, time\n"
        "from inferscale.models.training_progress import step_file, write_step\n"
        "for step in (1, 2, 3):\n"
        "    write_step(step_file(sys.argv[1]), step)\n"
        "    time.sleep(0.3)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    launch._wait_showing_steps(proc, tmp_path, 3, "SFT")
    [(description, total, unit, advances)] = bars
    assert (description, total, unit) == (f"SFT {tmp_path.name}", 3, "step")
    assert sum(advances) == 3 and all(n > 0 for n in advances)
    assert proc.returncode == 0


def test_off_a_terminal_the_launcher_is_only_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "bars_shown", lambda: False)

    def no_bar(*args, **kwargs):
        raise AssertionError("a bar was made off a terminal")

    monkeypatch.setattr(launch, "terminal_progress", no_bar)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    launch._wait_showing_steps(proc, tmp_path, 3, "SFT")
    assert proc.returncode == 0


def test_off_a_terminal_the_libraries_bars_are_silenced_too(monkeypatch):
    import os

    from transformers.utils import logging as transformers_logging

    from inferscale.progress import quiet_library_bars

    monkeypatch.setattr(os, "environ", dict(os.environ))
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "CI"):
        os.environ.pop(name, None)
    was = transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()
    try:
        monkeypatch.setattr(sys, "stderr", Terminal())
        quiet_library_bars()  # a terminal: left as they are
        assert transformers_logging.is_progress_bar_enabled()
        assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        quiet_library_bars()
        assert not transformers_logging.is_progress_bar_enabled()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # for the training ranks
        assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
    finally:
        (
            transformers_logging.enable_progress_bar
            if was
            else transformers_logging.disable_progress_bar
        )()
