"""Stop a training run whose loss or gradient norm is no longer a finite number.

A diverged run would otherwise save NaN (or saturated) weights, report a meaningless final loss
and be cached as a finished model that every later stage trusts.
"""

from __future__ import annotations

import math

WATCHED = ("loss", "grad_norm", "train_loss")


class TrainingDiverged(RuntimeError):
    pass


def non_finite(logs: dict) -> dict[str, float]:
    """The watched figures of a Trainer log entry that are NaN or infinite."""
    return {
        k: v
        for k, v in logs.items()
        if k in WATCHED and isinstance(v, int | float) and not math.isfinite(v)
    }


def check_finite(logs: dict, step: int) -> None:
    bad = non_finite(logs)
    if bad:
        said = ", ".join(f"{k} {v}" for k, v in bad.items())
        raise TrainingDiverged(
            f"training diverged at step {step} ({said}); nothing was saved: lower the learning "
            "rate, check weight_decay and the data, then run again"
        )


def finite_loss_callback():
    """A Trainer callback that raises TrainingDiverged at the first non-finite log entry."""
    from transformers import TrainerCallback

    class FiniteLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            check_finite(logs or {}, state.global_step)

    return FiniteLoss()
