"""The PRM scorer: (question, steps) pairs in, one probability per step out, batched.

A step's score depends only on the text up to its tag (the model is causal), so scoring a whole
solution also gives the score of every partial solution: the score of steps 1..k is the k-th
number. Sequences are right-padded, so a score does not depend on which other sequences share
its batch or how long they are. On CPU with eager attention (the default) the numbers are
bitwise the same whatever the batching (tested); PyTorch's fused SDPA kernels changed them in
the last float32 bit with the padded length. GPU kernels, which pick their algorithm by shape,
were not measured: `attn_implementation="sdpa"` is the faster choice there.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from inferscale.data.steps import StepFormat
from inferscale.models.prm import (
    BAD_TOKEN,
    GOOD_TOKEN,
    PRM_CONFIG_FILE,
    candidate_token_ids,
    encode_steps,
    pad_right,
    step_probabilities,
)


class PRMScorer:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        fmt: StepFormat,
        good_token: str = GOOD_TOKEN,
        bad_token: str = BAD_TOKEN,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.candidates = candidate_token_ids(tokenizer, good_token, bad_token)
        self.batch_size = batch_size
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        batch_size: int = 32,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        threads: int | None = None,
        fmt: StepFormat | None = None,
        good_token: str | None = None,
        bad_token: str | None = None,
        attn_implementation: str = "eager",
    ) -> PRMScorer:
        """Load a PRM directory (or hub id). The step format and candidate tokens default to
        those the PRM was trained with (its `prm.json`), else to Math-Shepherd's.

        `threads` sets torch's intra-op threads for the whole process (CPU scoring).
        """
        if threads:
            torch.set_num_threads(threads)
        saved = {}
        config_path = Path(model_dir) / PRM_CONFIG_FILE
        if config_path.is_file():
            saved = json.loads(config_path.read_text())
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, attn_implementation=attn_implementation
        ).to(device)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        return cls(
            model,
            tokenizer,
            fmt or StepFormat(**saved.get("format", {})),
            good_token or saved.get("good_token", GOOD_TOKEN),
            bad_token or saved.get("bad_token", BAD_TOKEN),
            batch_size,
        )

    @torch.no_grad()
    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """P(step correct) for every step of every (question, steps) pair, in order."""
        encoded = [encode_steps(self.tokenizer, self.fmt, q, steps) for q, steps in items]
        # Longest first: batches of similar lengths waste less on padding.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        scores: list[list[float]] = [[] for _ in encoded]
        device = self.model.device
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            ids, mask = pad_right([encoded[i][0] for i in batch], self.pad_id)
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            probs = step_probabilities(logits, self.candidates).cpu()
            for row, i in enumerate(batch):
                scores[i] = probs[row, encoded[i][1]].tolist()
        return scores

    def close(self) -> None:
        """Drop the model and return its memory."""
        on_cuda = self.model.device.type == "cuda"
        del self.model
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
