"""A tiny step-labelled set a PRM can learn in seconds, its tokenizer, and a tiny initial model.

Questions are `a + b - c + d` (modulo 20). A good solution computes each step; a bad one writes
one step with `*` instead of its operator, and every step from there on is bad, as in
Math-Shepherd's labels (once a solution goes wrong it stays wrong). Whether a step is good
depends only on the text up to its tag, and differs between steps of one solution, so a PRM
read at the wrong positions cannot learn it.
"""

from __future__ import annotations

import random
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from inferscale.data.step_labels import StepLabelled
from inferscale.data.steps import StepFormat
from inferscale.models.factory import new_tiny_llama, tiny_llama_config
from inferscale.models.tokenizer import build_tokenizer

FMT = StepFormat()
MODULUS = 20
# The project's tokenizer keeps the leading space inside operator tokens.
GOOD_TOKEN, BAD_TOKEN = " +", " -"


def labelled_set(n_questions: int, seed: int, prefix: str = "q") -> list[StepLabelled]:
    """Per question one good solution and one bad one (its first `*` at a random step)."""
    rng = random.Random(seed)
    records = []
    for q in range(n_questions):
        a, b, c, d = (rng.randrange(MODULUS) for _ in range(4))
        first, second = (a + b) % MODULUS, (a + b - c) % MODULUS
        answer = (second + d) % MODULUS
        good = [f"{a} + {b} = {first}", f"{first} - {c} = {second}", f"{second} + {d} = {answer}"]
        bad = list(good)
        wrong_at = rng.randrange(len(good))
        bad[wrong_at] = bad[wrong_at].replace(" + ", " * ").replace(" - ", " * ")
        question = f"{a} + {b} - {c} + {d}"
        for steps, correct in ((good, True), (bad, False)):
            steps = [*steps, FMT.answer_text(str(answer))]
            hard = [True] * len(steps) if correct else [k < wrong_at for k in range(len(steps))]
            records.append(
                StepLabelled(
                    question_id=f"{prefix}{q}",
                    question=question,
                    steps=steps,
                    soft_labels=[float(h) for h in hard],
                    hard_labels=hard,
                    final_correct=correct,
                    answer=str(answer),
                )
            )
    return records


def tokenizer_for(records: list[StepLabelled]) -> PreTrainedTokenizerFast:
    corpus = [FMT.prompt(r.question) + FMT.solution(r.steps) for r in records]
    return build_tokenizer(corpus, MODULUS)


def save_tiny_model(
    directory: Path, tokenizer, hidden_size: int = 64, seed: int = 0, num_layers: int = 1
) -> Path:
    """A randomly initialised tiny Llama and its tokenizer, as a PRM's starting point."""
    config = tiny_llama_config(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=hidden_size // 32,
        intermediate_size=2 * hidden_size,
        tokenizer=tokenizer,
        max_position_embeddings=64,
    )
    new_tiny_llama(config, seed=seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
