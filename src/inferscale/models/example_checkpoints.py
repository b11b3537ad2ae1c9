"""The checkpoints `configs/evaluate_only.yaml` evaluates, made on this machine (no download):
a tiny policy trained on the synthetic task, a tiny PRM in each format the tool reads, and
held-out step-labelled solutions in Math-Shepherd's upstream format.

    python -m inferscale.models.example_checkpoints runs/checkpoints

Each folder is made once: one that exists is kept, so a second call costs nothing and never
changes a checkpoint that an experiment's keys already hold.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from inferscale.data.steps import StepFormat
from inferscale.data.synthetic_labels import labelled_rows, write_rows
from inferscale.models.tiny_checkpoints import build_tiny_prm
from inferscale.models.tiny_policy import TinyTask, build_tiny_policy

POLICY_DIR = "tiny-policy"
HELDOUT_FILE = "heldout.jsonl"
HELDOUT_QUESTIONS = 100
PRM_DIRS = {
    "inferscale": "inferscale-prm",
    "math_shepherd": "math-shepherd-prm",
    "qwen_prm": "qwen-prm",
    "rlhflow": "rlhflow-prm",
}


def _once(path: Path, build: Callable[[Path], object], log: Callable[[str], None]) -> None:
    """Build `path` in a temporary sibling and move it in place, unless it exists."""
    if path.exists():
        log(f"kept {path}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        target = tmp / path.name
        build(target)
        target.replace(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"made {path}")


def heldout_rows(task: TinyTask, fmt: StepFormat, questions: int) -> list[dict]:
    """A right and a wrong solution of the last `questions` training problems, labelled."""
    return labelled_rows(task.training_problems(fmt)[-questions:], fmt, seed=task.seed)


def build_examples(out: str | Path, policy_steps: int = 400, log=print) -> Path:
    out = Path(out)
    task, fmt = TinyTask(), StepFormat()
    _once(out / POLICY_DIR, lambda p: build_tiny_policy(p, task, fmt, steps=policy_steps), log)
    for prm_format, name in PRM_DIRS.items():
        _once(out / name, lambda p, f=prm_format: build_tiny_prm(p, f), log)
    _once(
        out / HELDOUT_FILE,
        lambda p: write_rows(p, heldout_rows(task, fmt, HELDOUT_QUESTIONS)),
        log,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the folder to make them in (runs/checkpoints)")
    parser.add_argument(
        "--policy-steps", type=int, default=400, help="the policy's training steps (default 400)"
    )
    args = parser.parse_args()
    build_examples(args.out, args.policy_steps)


if __name__ == "__main__":
    main()
