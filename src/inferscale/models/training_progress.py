"""How far a training has got: rank 0 writes the step it has reached into a file of the output
folder, which the launching process reads to draw a progress bar and removes at the end."""

from __future__ import annotations

import os
from pathlib import Path

STEP_FILE = ".step"


def step_file(output_dir: str | Path) -> Path:
    return Path(output_dir) / STEP_FILE


def write_step(path: Path, step: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(step))
    os.replace(tmp, path)


def read_step(path: Path) -> int | None:
    """The step written last, or None before the first one."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def step_callback(output_dir: str | Path):
    """A Trainer callback with which rank 0 records each step it finishes."""
    from transformers import TrainerCallback

    path = step_file(output_dir)

    class RecordStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_step(path, state.global_step)

    return RecordStep()
