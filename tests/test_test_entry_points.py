"""The suite collects the same way under `pytest` as under `python -m pytest`: the first does
not put the working directory on sys.path, so helpers must be imported as the test files' own
neighbours, never as `tests.<module>`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_plain_pytest_collects_every_test_file():
    pytest_script = Path(sys.executable).parent / "pytest"
    done = subprocess.run(
        [str(pytest_script), "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO / "tests",  # not the root: nothing may rely on the working directory
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "error" not in done.stdout.splitlines()[-1].lower()
