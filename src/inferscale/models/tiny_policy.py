"""A tiny policy checkpoint made on this machine, to stand for one a user already has: a small
Llama trained briefly on the synthetic task's training split and saved as a Hugging Face folder
with its tokenizer.

It trains in this process with a plain loop (no launcher): it is an input of an experiment that
evaluates given checkpoints, not a stage of one. Its training split is the one `prepare_data`
makes for the same task and seed, which never asks a test question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import make_splits


@dataclass(frozen=True)
class TinyTask:
    """The synthetic task the policy learns; give an experiment the same data section."""

    modulus: int = 37
    levels: tuple[int, ...] = (1, 2, 3)
    operations: tuple[str, ...] = ("+", "-")
    any_order: bool = True
    train_size: int = 20000
    test_size: int = 120
    seed: int = 0

    def training_problems(self, fmt: StepFormat) -> list:
        """The training split `prepare_data` makes of this task, answers in `fmt`."""
        train, _ = make_splits(
            self.train_size,
            self.test_size,
            list(self.levels),
            self.modulus,
            self.seed,
            fmt.answer_phrase,
            operations=self.operations,
            any_order=self.any_order,
        )
        return train


def build_tiny_policy(
    directory: str | Path,
    task: TinyTask = TinyTask(),
    fmt: StepFormat | None = None,
    steps: int = 400,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Train the policy and save it (weights, config, tokenizer) in `directory`; `fmt` is the
    step format its solutions are written in (the default format when None)."""
    import torch

    from inferscale.models.factory import new_tiny_llama, tiny_llama_config
    from inferscale.models.sft import encode_example, pad_batch
    from inferscale.models.tokenizer import build_tokenizer

    fmt = fmt or StepFormat()
    train = task.training_problems(fmt)
    texts = [(fmt.prompt(p.question), fmt.solution(p.steps)) for p in train]
    max_number = max(task.modulus, 10, max(task.levels) + 2)
    tokenizer = build_tokenizer(
        [prompt + solution for prompt, solution in texts[:2000]], max_number
    )
    max_length = 128
    examples = [encode_example(tokenizer, p, s, max_length) for p, s in texts]
    config = tiny_llama_config(
        hidden_size, num_layers, num_heads, 4 * hidden_size, tokenizer, max_length
    )
    model = new_tiny_llama(config, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / warmup)
            * 0.5
            * (1 + torch.cos(torch.tensor(torch.pi * step / steps)).item())
        ),
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        batch = pad_batch([examples[i] for i in rows], tokenizer.pad_token_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
