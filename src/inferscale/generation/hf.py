"""The transformers backend: batched decoding with a KV cache and one random stream per sample.

HF `generate` draws every sequence of a batch from one generator, so a sample would depend on
which other sequences share its batch. This loop gives sample i of a request its own stream
seeded with `seed + i`, which makes samples reproducible whatever the batching.

A sample that ended on a stop string (a step, in tree search) leaves its KV cache behind, kept
up to `prefix_cache_bytes` (least recently used dropped first): a later prompt that starts with
that sample's prompt and text, a node's expansion in the next round, runs only its last tokens
instead of the whole prefix again. Reading a prefix from the cache instead of prefilling it
changes the logits in the last float bits, as batching does, so a near-tie of two tokens can
fall either way; the tests check that samples stay the same.
"""

from __future__ import annotations

import gc
import inspect
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from inferscale.generation.base import Completion, Request, Sample, validate_request
from inferscale.progress import bars_shown

MIN_BATCHES_FOR_PROGRESS = 4
COMPACT_AT_FINISHED_FRACTION = 0.25
DEFAULT_PREFIX_CACHE_BYTES = 2 * 2**30
# A continuation's prompt re-tokenizes its parent's text, which may end a token or two past the
# KV the parent left (its stop token was sampled, never run); look that far back for a prefix.
PREFIX_LOOKBACK = 4


@dataclass(frozen=True)
class _Sequence:
    """One sample to generate: sample `sample_index` of request `request_index`."""

    request_index: int
    sample_index: int
    prompt_ids: list[int]
    request: Request


def draw_uniforms(seed: int, count: int) -> torch.Tensor:
    """`count` draws in (0, 1] from a CPU generator seeded with `seed`, the same on any device."""
    generator = torch.Generator().manual_seed(seed)
    return 1.0 - torch.rand(count, generator=generator)


def sample_tokens(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, uniforms: torch.Tensor
) -> torch.Tensor:
    """One token per row: argmax where temperature is 0, else inverse-CDF sampling with the row's
    own uniform in (0, 1] after temperature scaling and nucleus (top-p) filtering.

    Every operation is row-wise, so a row's token does not depend on the other rows.
    """
    logits = logits.float()
    greedy = temperature == 0
    probs = torch.softmax(logits / torch.where(greedy, 1.0, temperature).unsqueeze(1), dim=-1)
    nucleus = (top_p < 1) & ~greedy
    if nucleus.any():
        # Only nucleus rows pay for the sort; the kept tokens stay in vocabulary order.
        rows = probs[nucleus]
        sorted_probs = rows.sort(dim=-1, descending=True).values
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        kept_count = (mass_before < top_p[nucleus].unsqueeze(1)).sum(dim=-1, keepdim=True)
        smallest_kept = sorted_probs.gather(1, kept_count - 1)
        probs[nucleus] = torch.where(rows >= smallest_kept, rows, 0.0)
    cdf = probs.cumsum(dim=-1)
    # The first token whose CDF reaches u * total; u > 0, so a zero-probability token never wins.
    sampled = torch.searchsorted(cdf, uniforms.unsqueeze(1) * cdf[:, -1:]).squeeze(1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """End index of the stop string occurrence that ends first in `text`, None if none occurs."""
    ends = [text.find(stop) + len(stop) for stop in stops if stop in text]
    return min(ends) if ends else None


def left_pad(
    prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask, prompts right-aligned so every row decodes at the end."""
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (padding gets 1, as HF generate does)."""
    positions = attention_mask.cumsum(dim=-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The tokenizer's eos plus any the generation config adds (chat models often end on those)."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, list) else [config_eos])
    return {token_id for token_id in ids if token_id is not None}


def text_decoder(tokenizer: PreTrainedTokenizerBase) -> Callable[[list[int]], str]:
    """Token ids to text, special tokens dropped, spaces left exactly as the tokens hold them.

    Uses the Rust tokenizer where there is one: the Python wrapper costs several times more per
    call, and the stop check decodes every running sequence at every step.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return partial(backend.decode, skip_special_tokens=True)
    return partial(tokenizer.decode, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class HFBackend:
    """Generation with a transformers causal LM, batched across requests and samples."""

    name = "hf"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 256,
        show_progress: bool = True,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> None:
        """Wrap an already loaded model, used on the device it is on."""
        if prefix_cache_bytes < 0:
            raise ValueError(f"prefix_cache_bytes must not be negative, got {prefix_cache_bytes}")
        self.model = model.eval()
        self.prefix_cache_bytes = prefix_cache_bytes
        # Token ids -> KV [2 * layers, kv heads, tokens, head dim], each layer's keys then values.
        self._prefixes: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self._prefix_bytes = 0
        self.prefill_tokens = 0  # prompt tokens run through the model, the cached ones left out
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.decode = text_decoder(tokenizer)
        fallback_pad = min(self.eos_ids) if self.eos_ids else 0
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fallback_pad
        # Logits for the last position only: the full [batch, prompt, vocab] tensor can be huge.
        accepts_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.forward_options = {"logits_to_keep": 1} if accepts_logits_to_keep else {}

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        dtype: str | torch.dtype = "auto",
        batch_size: int = 256,
        show_progress: bool = True,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> HFBackend:
        """Load a Hugging Face model directory (weights and tokenizer) onto `device`."""
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map=device)
        return cls(
            model,
            tokenizer,
            batch_size=batch_size,
            show_progress=show_progress,
            prefix_cache_bytes=prefix_cache_bytes,
        )

    def generate(self, requests: list[Request]) -> list[Completion]:
        if not requests:
            return []
        for request in requests:
            validate_request(request)
        prompt_ids = self.tokenizer([r.prompt for r in requests])["input_ids"]
        if any(len(ids) == 0 for ids in prompt_ids):
            raise ValueError("a prompt tokenizes to no tokens; the model needs at least one")
        sequences = [
            _Sequence(request_index, sample_index, prompt_ids[request_index], request)
            for request_index, request in enumerate(requests)
            for sample_index in range(request.n)
        ]
        # Similar lengths share a batch, which keeps left padding short.
        sequences.sort(key=lambda sequence: len(sequence.prompt_ids))
        batches = [
            sequences[start : start + self.batch_size]
            for start in range(0, len(sequences), self.batch_size)
        ]
        show = self.show_progress and len(batches) >= MIN_BATCHES_FOR_PROGRESS and bars_shown()
        samples: list[list[Sample | None]] = [[None] * r.n for r in requests]
        with torch.inference_mode():
            for batch in tqdm(batches, desc="hf generate", unit="batch", disable=not show):
                for sequence, sample in zip(batch, self._generate_batch(batch), strict=True):
                    samples[sequence.request_index][sequence.sample_index] = sample
                self._evict()
        return [
            Completion(prompt_tokens=len(ids), samples=request_samples)
            for ids, request_samples in zip(prompt_ids, samples, strict=True)
        ]

    def _generate_batch(self, batch: list[_Sequence]) -> list[Sample]:
        """Decode one batch until every sequence has finished.

        Finished rows ride along (their tokens ignored) until enough have gathered to be worth
        dropping from the batch, the KV cache included.
        """
        device = self.model.device
        requests = [sequence.request for sequence in batch]
        steps = max(r.max_new_tokens for r in requests)
        # The samples of one request share its prompt: prefill each prompt once, then give every
        # sample a copy of its KV cache rows (a tree search asks for several children per node).
        first_row: dict[int, int] = {}  # request index -> its row in the prefill
        unique: list[list[int]] = []
        for sequence in batch:
            if sequence.request_index not in first_row:
                first_row[sequence.request_index] = len(unique)
                unique.append(sequence.prompt_ids)
        expand = torch.tensor([first_row[s.request_index] for s in batch], device=device)
        input_ids, attention_mask, position_ids, cache = self._prefill_inputs(unique)
        temperature = torch.tensor([r.temperature for r in requests], device=device)
        top_p = torch.tensor([r.top_p for r in requests], device=device)
        uniforms = torch.stack(
            [draw_uniforms(s.request.seed + s.sample_index, steps) for s in batch]
        ).to(device)
        generated: list[list[int]] = [[] for _ in batch]
        results: list[Sample | None] = [None] * len(batch)
        active = list(range(len(batch)))  # batch index of each row still decoding

        for step in range(steps):
            logits = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                **self.forward_options,
            ).logits[:, -1, :]
            if step == 0 and len(unique) < len(batch):
                logits = logits[expand]
                cache.reorder_cache(expand)
                attention_mask, position_ids = attention_mask[expand], position_ids[expand]
            next_tokens = sample_tokens(logits, temperature, top_p, uniforms[:, step])
            stopped: dict[int, list[int]] = {}  # row -> the token ids its cache holds
            for row, (index, token) in enumerate(zip(active, next_tokens.tolist(), strict=True)):
                if results[index] is None:
                    result = self._advance(requests[index], generated[index], token)
                    results[index] = result
                    if result is not None and result.finish_reason == "stop":
                        # The cache holds everything but the stop token, sampled and not run.
                        stopped[row] = batch[index].prompt_ids + generated[index][:-1]
            if stopped and self.prefix_cache_bytes:
                self._keep(stopped, cache, attention_mask)
            keep = [row for row, index in enumerate(active) if results[index] is None]
            if not keep:
                break
            if len(active) - len(keep) >= COMPACT_AT_FINISHED_FRACTION * len(active):
                rows = torch.tensor(keep, device=device)
                cache.reorder_cache(rows)
                attention_mask, position_ids = attention_mask[rows], position_ids[rows]
                temperature, top_p, uniforms = temperature[rows], top_p[rows], uniforms[rows]
                next_tokens = next_tokens[rows]
                active = [active[row] for row in keep]
            input_ids = next_tokens.unsqueeze(1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(active), 1)], 1)
            position_ids = position_ids[:, -1:] + 1
        return results

    def _prefill_inputs(
        self, prompts: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache]:
        """Input ids, attention mask, positions and KV cache to prefill the prompts with.

        Each prompt's longest cached prefix goes into the cache, right-aligned; the rest of the
        prompt follows, right-aligned too, so every row decodes at the end.
        """
        device = self.model.device
        found = [self._lookup(ids) for ids in prompts]
        rest = [ids[len_:] for ids, (_, len_) in zip(prompts, found, strict=True)]
        self.prefill_tokens += sum(map(len, rest))
        input_ids, rest_mask = left_pad(rest, self.pad_id, device)
        past_width = max(len_ for _, len_ in found)
        if not past_width:
            return (
                input_ids,
                rest_mask,
                position_ids_from_mask(rest_mask),
                DynamicCache(config=self.model.config),
            )
        like = next(kv for kv, _ in found if kv is not None)
        layers2, heads, _, head_dim = like.shape
        past = like.new_zeros((layers2, len(prompts), heads, past_width, head_dim))
        past_mask = torch.zeros((len(prompts), past_width), dtype=torch.long, device=device)
        for row, (kv, len_) in enumerate(found):
            if kv is not None:
                past[:, row, :, past_width - len_ :] = kv
                past_mask[row, past_width - len_ :] = 1
        cached = torch.tensor([len_ for _, len_ in found], device=device).unsqueeze(1)
        position_ids = (rest_mask.cumsum(dim=-1) - 1 + cached).masked_fill(rest_mask == 0, 1)
        pairs = [(past[2 * k], past[2 * k + 1]) for k in range(layers2 // 2)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        return input_ids, torch.cat([past_mask, rest_mask], dim=1), position_ids, cache

    def _lookup(self, ids: list[int]) -> tuple[torch.Tensor | None, int]:
        """The KV of the longest cached prefix of `ids` (leaving at least the last token to
        run, for its logits) and its length; (None, 0) when there is none."""
        for length in range(len(ids), max(0, len(ids) - PREFIX_LOOKBACK), -1):
            key = tuple(ids[:length])
            kv = self._prefixes.get(key)
            if kv is not None:
                self._prefixes.move_to_end(key)
                used = min(length, len(ids) - 1)
                return (kv[:, :, :used], used) if used else (None, 0)
        return None, 0

    def _keep(
        self, stopped: dict[int, list[int]], cache: DynamicCache, attention_mask: torch.Tensor
    ) -> None:
        """Keep the KV cache of rows (their real positions) under the token ids each holds."""
        rows = torch.tensor(list(stopped), device=attention_mask.device)
        real = attention_mask.index_select(0, rows).bool()
        kv = torch.stack(
            [t.index_select(0, rows) for layer in cache.layers for t in (layer.keys, layer.values)]
        )  # [2 * layers, rows, kv heads, positions, head dim]
        for j, ids in enumerate(stopped.values()):
            key = tuple(ids)
            if key in self._prefixes or int(real[j].sum()) != len(ids):
                continue  # the second cannot happen with a well-formed cache: keep nothing
            row_kv = kv[:, j][:, :, real[j]]
            self._prefixes[key] = row_kv
            self._prefix_bytes += row_kv.numel() * row_kv.element_size()

    def _evict(self) -> None:
        while self._prefixes and self._prefix_bytes > self.prefix_cache_bytes:
            _, kv = self._prefixes.popitem(last=False)
            self._prefix_bytes -= kv.numel() * kv.element_size()

    def clear_cache(self) -> None:
        """Forget every kept prefix."""
        self._prefixes.clear()
        self._prefix_bytes = 0

    def _advance(self, request: Request, generated: list[int], token: int) -> Sample | None:
        """Take the sequence's next token; the finished sample if that token ends it, else None."""
        if token in self.eos_ids:
            return Sample(self.decode(generated), len(generated) + 1, "eos")
        generated.append(token)
        if request.stop:
            # Nearly every token decodes to at least one character, so one token more than the
            # longest stop string has characters covers any occurrence this token completed.
            tail = self.decode(generated[-(max(map(len, request.stop)) + 1) :])
            if find_stop(tail, request.stop) is not None:
                text = self.decode(generated)
                # Falls back to the whole text should the full decode disagree with the tail's.
                end = find_stop(text, request.stop) or len(text)
                return Sample(text[:end], len(generated), "stop")
        if len(generated) == request.max_new_tokens:
            return Sample(self.decode(generated), len(generated), "length")
        return None

    def close(self) -> None:
        """Drop the model and tokenizer and return their memory."""
        on_cuda = self.model.device.type == "cuda"
        self.clear_cache()
        del self.model, self.tokenizer
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
