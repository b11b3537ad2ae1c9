"""FLOPs accounting for generating and scoring samples with Llama-style decoders.

A forward pass over one token costs 2 N + 4 n_layer n_ctx d_attn FLOPs, with N the non-embedding
parameters, d_attn = heads x head_dim and n_ctx the context the token attends to (a token at
1-based position p attends to p positions). Kaplan et al. (2020) count 2 n_layer n_ctx d_attn,
the query-key products alone; the attention-weighted sum of the values costs as much again.
A token whose next-token distribution is needed also pays for its logits, 2 d_model vocab
(the output projection costs that whether or not it shares its weights with the embeddings).

Two accountings:
- "paper": generated tokens x 2 N, N the total, the non-embedding or a nominal parameter count
  per `paper_params`; the prompt is free. This is how Wu et al. 2024 report FLOPs; with the
  nominal sizes (7e9, 34e9) all four Llemma entries of their Table 4 imply the same ~280
  generated tokens.
- "full": every token's forward at its own n_ctx; a prompt is prefilled once and shared by all
  samples generated from it, each generated token is one forward and one row of logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

Accounting = Literal["paper", "full"]
PaperParams = Literal["total", "non_embedding", "nominal"]

# The parameter count behind "paper" FLOPs; "total" matches the 3.92e12 FLOPs per MATH500
# question that Wu et al. report for greedy Llemma-7B (~291 tokens x 2 x 6.74e9).
DEFAULT_PAPER_PARAMS: PaperParams = "total"


# Models whose query, key and value projections have biases (not the output's) though their
# config has no attention_bias to say so.
QKV_BIAS_MODELS = frozenset({"qwen2"})


def count_parameters(config: Any) -> dict[str, int]:
    """Parameters of a Llama-style causal LM (Llama, Mistral, Qwen2) from its config (a
    transformers config or a dict).

    embedding = input embeddings + the lm_head when it is not tied to them;
    non_embedding = decoder layers (attention, MLP, both RMSNorms) + the final norm.
    """
    hidden = _field(config, "hidden_size")
    heads = _field(config, "num_attention_heads")
    kv_heads = _field(config, "num_key_value_heads", heads)
    head_dim = _field(config, "head_dim", hidden // heads)
    intermediate = _field(config, "intermediate_size")
    vocab = _field(config, "vocab_size")

    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    if _field(config, "attention_bias", False):
        attention += head_dim * (heads + 2 * kv_heads) + hidden
    elif _field(config, "model_type", None) in QKV_BIAS_MODELS:
        attention += head_dim * (heads + 2 * kv_heads)
    mlp = 3 * hidden * intermediate
    if _field(config, "mlp_bias", False):
        mlp += 2 * intermediate + hidden
    layer = attention + mlp + 2 * hidden
    non_embedding = _field(config, "num_hidden_layers") * layer + hidden

    tied = _field(config, "tie_word_embeddings", False)
    embedding = vocab * hidden * (1 if tied else 2)
    return {
        "total": non_embedding + embedding,
        "embedding": embedding,
        "non_embedding": non_embedding,
    }


@dataclass(frozen=True)
class ModelCost:
    """What the FLOPs formulas need to know about a model."""

    non_embedding: int
    total: int
    n_layer: int
    d_model: int
    d_attn: int | None = None  # heads x head_dim; None: d_model
    vocab: int = 0  # rows of the output projection (0: logits not counted)
    nominal: int | None = None  # the size the model is known by (7e9 for Llemma-7B)

    @classmethod
    def from_config(cls, config: Any, nominal: float | None = None) -> ModelCost:
        counts = count_parameters(config)
        heads = _field(config, "num_attention_heads")
        hidden = _field(config, "hidden_size")
        return cls(
            non_embedding=counts["non_embedding"],
            total=counts["total"],
            n_layer=_field(config, "num_hidden_layers"),
            d_model=hidden,
            d_attn=heads * _field(config, "head_dim", hidden // heads),
            vocab=_field(config, "vocab_size"),
            nominal=None if nominal is None else round(nominal),
        )


# What a read costs that is counted as free (an oracle PRM with `flops: zero`).
FREE = ModelCost(non_embedding=0, total=0, n_layer=0, d_model=0)


def reward_head_cost(config: Any) -> ModelCost:
    """The cost of a model read through a two-class head at every position instead of an LM
    head (Qwen2.5-Math-PRM: Linear(H, H) -> ReLU -> Linear(H, 2)): the head's first layer runs
    on every token, so it counts in N; a read pays for 2 outputs, not a row of logits; and the
    model has input embeddings only."""
    lm = ModelCost.from_config(config)
    hidden = lm.d_model
    first, last = hidden * hidden + hidden, hidden * 2 + 2
    embedding = _field(config, "vocab_size") * hidden
    return replace(
        lm,
        non_embedding=lm.non_embedding + first,
        total=lm.non_embedding + embedding + first + last,
        vocab=2,
    )


def forward_flops(cost: ModelCost, n_tokens: int, n_past: int = 0, logits: int = 0) -> int:
    """Full-accounting FLOPs of a forward over n_tokens that follow n_past cached tokens, with
    `logits` of them producing a next-token distribution."""
    if n_tokens < 0 or n_past < 0 or not 0 <= logits <= n_tokens:
        raise ValueError(
            f"need n_tokens, n_past >= 0 and 0 <= logits <= n_tokens, got n_tokens={n_tokens}, "
            f"n_past={n_past}, logits={logits}"
        )
    # Sum of the positions n_past+1 .. n_past+n_tokens, each token's n_ctx.
    context_sum = (n_past + n_tokens) * (n_past + n_tokens + 1) // 2 - n_past * (n_past + 1) // 2
    d_attn = cost.d_model if cost.d_attn is None else cost.d_attn
    return (
        2 * cost.non_embedding * n_tokens
        + 4 * cost.n_layer * d_attn * context_sum
        + 2 * cost.d_model * cost.vocab * logits
    )


def generation_flops(
    cost: ModelCost,
    prompt_tokens: int,
    generated_tokens: Iterable[int],
    accounting: Accounting,
    paper_params: PaperParams = DEFAULT_PAPER_PARAMS,
) -> int:
    """FLOPs of generating samples of the given lengths from one prompt."""
    generated = list(generated_tokens)
    if accounting == "paper":
        return sum(generated) * 2 * _paper_param_count(cost, paper_params)
    if accounting == "full":
        # Each generated token comes from one row of logits (the first from the prompt's last
        # position): a sample of n tokens pays for n rows.
        samples = sum(forward_flops(cost, length, prompt_tokens, length) for length in generated)
        return forward_flops(cost, prompt_tokens) + samples
    raise ValueError(f"unknown accounting {accounting!r}")


def pool_flops(
    cost: ModelCost,
    prompt_tokens: int,
    sample_tokens: Sequence[int],
    n: float,
    accounting: Accounting,
    paper_params: PaperParams = DEFAULT_PAPER_PARAMS,
) -> float:
    """Expected FLOPs of n samples drawn from a pool of samples of one prompt: the prompt is
    read once (full accounting), then n / pool-size of the pool's samples."""
    share = n / len(sample_tokens)
    if accounting == "paper":
        return share * generation_flops(cost, prompt_tokens, sample_tokens, "paper", paper_params)
    prefill = forward_flops(cost, prompt_tokens)
    samples = generation_flops(cost, prompt_tokens, sample_tokens, "full") - prefill
    return prefill + share * samples


def pool_scoring_flops(
    prm_cost: ModelCost,
    prompt_tokens: int,
    sample_tokens: Sequence[int],
    steps: Sequence[int],
    n: float,
) -> float:
    """Full-accounting FLOPs of a PRM reading n samples drawn from a pool: the prompt once (its
    scorer keeps the KV), then each drawn sample after it, with one row of logits per step."""
    share = n / len(sample_tokens)
    samples = sum(
        forward_flops(prm_cost, tokens, prompt_tokens, min(count, tokens))
        for tokens, count in zip(sample_tokens, steps, strict=True)
    )
    return forward_flops(prm_cost, prompt_tokens) + share * samples


def _paper_param_count(cost: ModelCost, paper_params: PaperParams) -> int:
    if paper_params == "total":
        return cost.total
    if paper_params == "non_embedding":
        return cost.non_embedding
    if paper_params == "nominal":
        if cost.nominal is None:
            raise ValueError("paper_params 'nominal' needs the model's nominal size")
        return cost.nominal
    raise ValueError(f"unknown paper_params {paper_params!r}")


def _field(config: Any, name: str, default: Any = ...) -> Any:
    """A config value; `default` also replaces an explicit None (e.g. head_dim=None)."""
    value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
    if value is not None:
        return value
    if default is ...:
        raise ValueError(f"config has no {name}")
    return default
