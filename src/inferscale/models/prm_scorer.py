"""The PRM scorer: (question, steps) pairs in, one probability per step out, batched, with the
KV cache of what it has read kept for the next call. It reads every PRM format alike: the
format's adapter (`prm_formats.py`) says what text a pair becomes and where each step is read.

A step's score depends only on the text up to its read position (the model is causal), so
scoring a whole solution also gives the score of every partial solution: the score of steps
1..k is the k-th number. The scorer reads a solution in chunks, the prompt and then each step
through its read position, each chunk on top of the KV cache of the chunks before it, and keeps
the KV cache of every prefix it read (least recently used dropped first beyond `cache_bytes`).
A tree search scores a node's children one round after the node itself, so each child costs
only its own step instead of the whole solution again, and a question's prompt is read once for
all its solutions.

Every chunk is laid out the same way whatever shares its batch and whether its prefix came from
the cache: the prefix's KV at the front, padded to a multiple of PAST_ALIGN positions, then the
chunk's tokens, then right padding. On CPU with eager attention (the default) and the
machine's own kernels (INFERSCALE_CPU_NUMERICS=native) the scores are bitwise the same whatever
the batching, the padding or the cache held; under the CPU numerics pins, whose reproducible MKL
branch picks its matmul kernels by the matrices' shapes, they agree to float32 rounding (tested:
within 1e-6). PyTorch's fused
SDPA kernels changed them in the last float32 bit with the padded length. They equal one forward
pass over the whole solution up to float rounding. On an H200 (bench/prm_formats_gpu.py, every
PRM format) float32 scores differ with the batching by at most 1.2e-7 and from one forward pass
by as much; bfloat16 ones are bitwise the same whatever the batching, and with SDPA up to 2.4e-4
from one forward pass (its cached prefix is read back in bfloat16).
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel

from inferscale.data.steps import StepFormat
from inferscale.models.prm import step_probabilities
from inferscale.models.prm_formats import (
    StepReader,
    check_prm_format,
    our_settings,
    step_reader,
)

PAST_ALIGN = 32  # a chunk's cached prefix is padded to a multiple of this many positions
# Narrower inputs took other CPU kernels (softmax over fewer than 16 keys), which changed the
# numbers in the last bit; every forward is at least this wide.
MIN_WIDTH = 16
DEFAULT_CACHE_BYTES = 2 * 2**30


@dataclass(frozen=True)
class _Prefix:
    """What the PRM read of a solution up to a chunk's end."""

    kv: torch.Tensor  # [2 * layers, kv heads, tokens, head dim]: each layer's keys, then values
    probs: tuple[float, ...]  # P(step correct) at each step read so far

    @property
    def tokens(self) -> int:
        return self.kv.shape[2]

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()


@dataclass(frozen=True)
class _Encoded:
    ids: list[int]
    ends: list[int]  # where each chunk ends (exclusive); only the prompt's chunk reads no step
    tagged: list[bool]  # whether each chunk ends at a step's read position

    def key(self, chunk: int) -> tuple:
        end = self.ends[chunk]
        return tuple(self.ids[:end]), tuple(self.ends[: chunk + 1])


@dataclass(frozen=True)
class _Chunk:
    """One chunk to read: tokens start..end of a solution on top of `past`."""

    past: _Prefix | None
    ids: list[int]
    tagged: bool

    @property
    def start(self) -> int:
        return self.past.tokens if self.past is not None else 0


def aligned(tokens: int) -> int:
    return -(-tokens // PAST_ALIGN) * PAST_ALIGN


class PRMScorer:
    def __init__(
        self,
        model: PreTrainedModel,
        reader: StepReader,
        batch_size: int = 32,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must not be negative, got {cache_bytes}")
        self.model = model.eval()
        self.reader = reader
        self.tokenizer = reader.tokenizer
        self.candidates = reader.outputs
        self.batch_size = batch_size
        self.cache_bytes = cache_bytes
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        self._cache: OrderedDict[tuple, _Prefix] = OrderedDict()
        self._cached_bytes = 0
        self._token_bytes: int | None = None  # KV bytes per token, known after the first read
        self.tokens_read = 0  # tokens run through the model, padding left out

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
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        prm_format: str = "inferscale",
        revision: str | None = None,
    ) -> PRMScorer:
        """Open a PRM checkpoint (a directory or a hub id at `revision`) read in `prm_format`
        (`prm_formats.PRM_FORMATS`). For our own format the step format and candidate tokens
        default to those the PRM was trained with (its `prm.json`), else to Math-Shepherd's;
        the public formats fix theirs. A checkpoint that does not fit the format is refused
        (ValueError, one line) before its weights are read.

        `threads` sets torch's intra-op threads for the whole process (CPU scoring).
        """
        problem = check_prm_format(
            model_dir, prm_format, revision, fmt=fmt, good_token=good_token, bad_token=bad_token
        )
        if problem:
            raise ValueError(problem)
        if threads:
            torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, revision=revision)
        reader = step_reader(
            tokenizer, prm_format, *our_settings(model_dir, prm_format, fmt, good_token, bad_token)
        )
        options = {"revision": revision, "dtype": dtype, "attn_implementation": attn_implementation}
        if prm_format == "qwen_prm":
            from inferscale.models.qwen_prm import load_qwen_prm

            model = load_qwen_prm(str(model_dir), **options)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_dir, **options)
        return cls(model.to(device), reader, batch_size, cache_bytes)

    @torch.no_grad()
    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """P(step correct) for every step of every (question, steps) pair, in order."""
        encoded = self._encode(items)
        scores: list[list[float]] = [[] for _ in encoded]
        # Items are read in waves of at least a batch whose KV fits in half the cache, so that a
        # large call holds no more than that in memory at once.
        wave: list[int] = []
        wave_tokens = 0
        for i, item in enumerate(encoded):
            if not item.ends:
                continue  # no steps: nothing to score
            tokens = item.ends[-1]
            limit = self._wave_tokens()
            if len(wave) >= self.batch_size and wave_tokens + tokens > limit:
                self._read(encoded, wave, scores)
                wave, wave_tokens = [], 0
            wave.append(i)
            wave_tokens += tokens
        if wave:
            self._read(encoded, wave, scores)
        return scores

    def _wave_tokens(self) -> int:
        if self._token_bytes is None:
            return 0  # the first wave is one batch, which measures the KV size per token
        return self.cache_bytes // 2 // self._token_bytes

    def _encode(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[_Encoded]:
        with_steps = [i for i, (_, steps) in enumerate(items) if steps]
        encoded = self.reader.encode([items[i] for i in with_steps])
        out = [_Encoded([], [], []) for _ in items]  # no steps: nothing to read
        for i, item in zip(with_steps, encoded, strict=True):
            ends = [read + 1 for read in item.reads]
            tagged = [True] * len(ends)
            # The prompt is a chunk of its own, shared by the question's solutions, unless
            # it reaches into step 1's chunk.
            if 0 < item.prompt < ends[0]:
                ends.insert(0, item.prompt)
                tagged.insert(0, False)
            out[i] = _Encoded(item.ids, ends, tagged)
        return out

    def _read(self, encoded: list[_Encoded], wave: list[int], scores: list[list[float]]) -> None:
        """Read every chunk of the wave's items the cache does not hold, one chunk per item per
        round, and set their scores."""
        done: dict[int, _Prefix | None] = {i: None for i in wave}  # the prefix read so far
        next_chunk: dict[int, int] = {}
        for i in wave:
            item = encoded[i]
            chunk = len(item.ends)
            while chunk > 0 and item.key(chunk - 1) not in self._cache:
                chunk -= 1
            done[i] = self._cache_get(item.key(chunk - 1)) if chunk > 0 else None
            next_chunk[i] = chunk
        pending = [i for i in wave if next_chunk[i] < len(encoded[i].ends)]
        while pending:
            todo: dict[tuple, _Chunk] = {}
            waiting: dict[int, tuple] = {}
            for i in pending:
                item, chunk = encoded[i], next_chunk[i]
                key = item.key(chunk)
                waiting[i] = key
                if key not in todo and key not in self._cache:
                    start = item.ends[chunk - 1] if chunk > 0 else 0
                    todo[key] = _Chunk(
                        done[i], item.ids[start : item.ends[chunk]], item.tagged[chunk]
                    )
            read = self._read_chunks(list(todo.values()))
            fresh = dict(zip(todo, read, strict=True))
            for key, prefix in fresh.items():
                self._cache_put(key, prefix)
            for i in pending:
                key = waiting[i]
                done[i] = fresh[key] if key in fresh else self._cache_get(key)
                next_chunk[i] += 1
            pending = [i for i in pending if next_chunk[i] < len(encoded[i].ends)]
            self._evict()
        for i in wave:
            prefix = done[i]
            assert prefix is not None
            scores[i] = list(prefix.probs)

    def _read_chunks(self, chunks: list[_Chunk]) -> list[_Prefix]:
        """Run the chunks through the model, those with equally aligned prefixes together,
        longest first."""
        order = sorted(
            range(len(chunks)), key=lambda c: (aligned(chunks[c].start), -len(chunks[c].ids))
        )
        out: list[_Prefix | None] = [None] * len(chunks)
        start = 0
        while start < len(order):
            width = aligned(chunks[order[start]].start)
            stop = start
            while (
                stop < len(order)
                and stop - start < self.batch_size
                and aligned(chunks[order[stop]].start) == width
            ):
                stop += 1
            batch = order[start:stop]
            prefixes = self._forward([chunks[c] for c in batch], width)
            for c, prefix in zip(batch, prefixes, strict=True):
                out[c] = prefix
            start = stop
        return out  # type: ignore[return-value]

    def _forward(self, chunks: list[_Chunk], past_width: int) -> list[_Prefix]:
        device = self.model.device
        width = max(MIN_WIDTH, *(len(c.ids) for c in chunks))
        ids = torch.full((len(chunks), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunks), past_width + width), dtype=torch.long)
        positions = torch.empty((len(chunks), width), dtype=torch.long)
        for row, chunk in enumerate(chunks):
            ids[row, : len(chunk.ids)] = torch.tensor(chunk.ids, dtype=torch.long)
            mask[row, : chunk.start] = 1
            mask[row, past_width : past_width + len(chunk.ids)] = 1
            positions[row] = torch.arange(chunk.start, chunk.start + width)
        cache = DynamicCache(config=self.model.config)
        if past_width:
            first = next(c.past for c in chunks if c.past is not None)
            layers2, heads, _, head_dim = first.kv.shape
            past = first.kv.new_zeros((layers2, len(chunks), heads, past_width, head_dim))
            for row, chunk in enumerate(chunks):
                if chunk.past is not None:
                    past[:, row, :, : chunk.start] = chunk.past.kv
            pairs = [(past[2 * k], past[2 * k + 1]) for k in range(layers2 // 2)]
            cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        logits = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
        ).logits
        last = torch.tensor([len(c.ids) - 1 for c in chunks], device=device)
        probs = step_probabilities(
            logits[torch.arange(len(chunks), device=device), last], self.candidates
        )
        kv = torch.stack([t for layer in cache.layers for t in (layer.keys, layer.values)])
        prefixes = []
        for row, (chunk, p) in enumerate(zip(chunks, probs.tolist(), strict=True)):
            end = chunk.start + len(chunk.ids)
            full = kv.new_empty((kv.shape[0], kv.shape[2], end, kv.shape[4]))
            if chunk.past is not None:
                full[:, :, : chunk.start] = chunk.past.kv
            full[:, :, chunk.start :] = kv[:, row, :, past_width : past_width + len(chunk.ids)]
            before = chunk.past.probs if chunk.past is not None else ()
            prefixes.append(_Prefix(full, before + (p,) if chunk.tagged else before))
            self.tokens_read += len(chunk.ids)
        if self._token_bytes is None:
            self._token_bytes = max(1, prefixes[0].nbytes // prefixes[0].tokens)
        return prefixes

    def _cache_get(self, key: tuple) -> _Prefix:
        self._cache.move_to_end(key)
        return self._cache[key]

    def _cache_put(self, key: tuple, prefix: _Prefix) -> None:
        if key in self._cache:
            return
        self._cache[key] = prefix
        self._cached_bytes += prefix.nbytes

    def _evict(self) -> None:
        while self._cache and self._cached_bytes > self.cache_bytes:
            _, prefix = self._cache.popitem(last=False)
            self._cached_bytes -= prefix.nbytes

    def clear_cache(self) -> None:
        """Forget every prefix read so far."""
        self._cache.clear()
        self._cached_bytes = 0

    def close(self) -> None:
        """Drop the model and the cache and return their memory."""
        on_cuda = self.model.device.type == "cuda"
        self.clear_cache()
        del self.model
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
