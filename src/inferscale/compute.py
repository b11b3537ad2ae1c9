"""FLOPs accounting for generating and scoring samples with Llama-style decoders.

A forward pass over one token costs 2 N + 2 n_layer n_ctx d_model FLOPs (Kaplan et al. 2020),
with N the non-embedding parameters and n_ctx the context the token attends to: a token at
1-based position p attends to p positions (itself and everything before it).

Two accountings:
- "paper": generated tokens x 2 N, N the total or the non-embedding parameters per
  `paper_params`; the prompt is free. This is how Wu et al. 2024 report FLOPs.
- "full": every token's forward at its own n_ctx; a prompt is prefilled once and shared by all
  samples generated from it, each generated token is one forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Accounting = Literal["paper", "full"]
PaperParams = Literal["total", "non_embedding"]

# The parameter count behind "paper" FLOPs; "total" matches the 3.92e12 FLOPs per MATH500
# question that Wu et al. report for greedy Llemma-7B (~291 tokens x 2 x 6.74e9).
DEFAULT_PAPER_PARAMS: PaperParams = "total"


def count_parameters(config: Any) -> dict[str, int]:
    """Parameters of a Llama-style causal LM from its config (a transformers config or a dict).

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

    @classmethod
    def from_config(cls, config: Any) -> ModelCost:
        counts = count_parameters(config)
        return cls(
            non_embedding=counts["non_embedding"],
            total=counts["total"],
            n_layer=_field(config, "num_hidden_layers"),
            d_model=_field(config, "hidden_size"),
        )


def forward_flops(cost: ModelCost, n_tokens: int, n_past: int = 0) -> int:
    """Full-accounting FLOPs of a forward over n_tokens that follow n_past cached tokens."""
    if n_tokens < 0 or n_past < 0:
        raise ValueError(f"token counts must be >= 0, got n_tokens={n_tokens}, n_past={n_past}")
    # Sum of the positions n_past+1 .. n_past+n_tokens, each token's n_ctx.
    context_sum = (n_past + n_tokens) * (n_past + n_tokens + 1) // 2 - n_past * (n_past + 1) // 2
    return 2 * cost.non_embedding * n_tokens + 2 * cost.n_layer * cost.d_model * context_sum


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
        samples = sum(forward_flops(cost, length, prompt_tokens) for length in generated)
        return forward_flops(cost, prompt_tokens) + samples
    raise ValueError(f"unknown accounting {accounting!r}")


def _paper_param_count(cost: ModelCost, paper_params: PaperParams) -> int:
    if paper_params == "total":
        return cost.total
    if paper_params == "non_embedding":
        return cost.non_embedding
    raise ValueError(f"unknown paper_params {paper_params!r}")


def _field(config: Any, name: str, default: Any = ...) -> Any:
    """A config value; `default` also replaces an explicit None (e.g. head_dim=None)."""
    value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
    if value is not None:
        return value
    if default is ...:
        raise ValueError(f"config has no {name}")
    return default
