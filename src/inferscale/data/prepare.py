"""The prepare_data stage's work: train/test problems (and, for the synthetic task, a tokenizer)."""

from __future__ import annotations

from pathlib import Path

from inferscale.config import DataConfig
from inferscale.data.adapters import load_problems
from inferscale.data.records import Problem, write_problems
from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import make_splits
from inferscale.models.tokenizer import build_tokenizer, save_tokenizer

TRAIN_FILE = "train.jsonl"
TEST_FILE = "test.jsonl"
TOKENIZER_DIR = "tokenizer"


def step_format(data: DataConfig) -> StepFormat:
    return data.format.step_format()


def load_splits(data: DataConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    fmt = step_format(data)
    if data.arithmetic is not None:
        a = data.arithmetic
        return make_splits(
            a.train_size,
            a.test_size,
            a.levels,
            a.modulus,
            seed,
            fmt.answer_phrase,
            a.swap_rate,
            tuple(a.operations),
            a.any_order,
        )
    # An experiment that trains nothing needs no training split.
    train = []
    if data.train is not None:
        ref = data.train
        train = load_problems(ref.source, ref.path, ref.split, ref.limit, ref.subset)
    test = [
        p
        for ref in data.eval
        for p in load_problems(ref.source, ref.path, ref.split, ref.limit, ref.subset)
    ]
    return train, test


def prepare_data(data: DataConfig, seed: int, out_dir: Path) -> dict:
    """Write the splits (and the synthetic task's tokenizer) into out_dir; return their stats."""
    train, test = load_splits(data, seed)
    write_problems(out_dir / TRAIN_FILE, train)
    write_problems(out_dir / TEST_FILE, test)
    if data.arithmetic is not None:
        fmt = step_format(data)
        corpus = [fmt.prompt(p.question) + fmt.solution(p.steps) for p in train[:2000]]
        max_number = max(data.arithmetic.modulus, 10, max(data.arithmetic.levels) + 2)
        save_tokenizer(build_tokenizer(corpus, max_number), out_dir / TOKENIZER_DIR)
    levels: dict[str, int] = {}
    for p in test:
        levels[str(p.level)] = levels.get(str(p.level), 0) + 1
    return {"train_problems": len(train), "test_problems": len(test), "test_levels": levels}
