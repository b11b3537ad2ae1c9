"""Progress bars on a terminal, one per unit of a stage's work (questions, prefixes, training
steps). They are drawn on stderr only when it is a terminal and no CI runs, so that a log file
or Prefect's log lines never hold them."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TextIO

# advance(n): n more units are done.
Advance = Callable[[int], None]
# progress(description, total, done, unit): a context whose value is its `advance`.
Progress = Callable[..., AbstractContextManager[Advance]]


def _ignore(n: int) -> None:
    pass


def no_progress(
    description: str, total: int | None, done: int = 0, unit: str = "question"
) -> AbstractContextManager[Advance]:
    return nullcontext(_ignore)


def bars_shown(stream: TextIO | None = None) -> bool:
    """A terminal is watching `stream` (stderr), and this is no CI job (whose log would keep
    every redraw)."""
    stream = sys.stderr if stream is None else stream
    return stream.isatty() and not os.environ.get("CI")


def quiet_library_bars() -> None:
    """Off a terminal, silence the libraries' own bars too (transformers' weight loading, the
    hub's downloads, datasets'), in this process and in those it starts (training ranks)."""
    if bars_shown():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # transformers and the hub read the variable when imported, which may have happened.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


@contextmanager
def terminal_progress(
    description: str, total: int | None, done: int = 0, unit: str = "question"
) -> Iterator[Advance]:
    """A bar on stderr while the block runs, removed at its end; nothing off a terminal."""
    if not bars_shown():
        yield _ignore
        return
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=done,
        desc=description,
        unit=unit,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    try:
        yield bar.update
    finally:
        bar.close()


def stage_progress(stage: str) -> Progress:
    """Terminal bars named after `stage` and what each counts (`evaluate-A greedy`)."""

    def progress(
        what: str, total: int | None, done: int = 0, unit: str = "question"
    ) -> AbstractContextManager[Advance]:
        return terminal_progress(f"{stage} {what}", total, done, unit)

    return progress
