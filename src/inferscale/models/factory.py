"""Policy models: tiny Llama-architecture models built from a size spec."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

# vLLM's attention kernels accept these head sizes among the small ones; 16 is refused.
SUPPORTED_HEAD_DIMS = (32, 64, 128)


def tiny_llama_config(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    tokenizer: PreTrainedTokenizerBase,
    max_position_embeddings: int,
) -> LlamaConfig:
    head_dim = hidden_size // num_heads
    if hidden_size % num_heads or head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(
            f"hidden_size {hidden_size} / num_heads {num_heads} must give a head_dim in "
            f"{SUPPORTED_HEAD_DIMS}"
        )
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def new_tiny_llama(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    import torch

    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
