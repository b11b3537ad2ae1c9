import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from inferscale.compute import (
    ModelCost,
    count_parameters,
    forward_flops,
    generation_flops,
    pool_flops,
    reward_head_cost,
)

LLEMMA_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32016,
    "tie_word_embeddings": False,
}
LLEMMA_34B = {
    "hidden_size": 8192,
    "intermediate_size": 22016,
    "num_hidden_layers": 48,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}


LLAMA_SIZE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)


def tiny_config(**overrides):
    fields = {
        "hidden_size": 48,
        "intermediate_size": 80,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "vocab_size": 101,
    }
    return LlamaConfig(**(fields | overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"tie_word_embeddings": False},
        {"tie_word_embeddings": True},
        {"num_key_value_heads": 6},
        {"head_dim": 12},
        {"attention_bias": True, "mlp_bias": True},
    ],
)
def test_parameter_count_matches_a_real_model(overrides):
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    counts = count_parameters(config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    if not config.tie_word_embeddings:
        embedding += model.get_output_embeddings().weight.numel()
    assert counts["embedding"] == embedding
    assert counts["non_embedding"] == counts["total"] - embedding


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_parameter_count_matches_the_other_llama_style_families(family):
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in tiny_config().to_dict().items() if k in LLAMA_SIZE_FIELDS}
    config = AutoConfig.for_model(family, **fields)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    assert count_parameters(config)["total"] == sum(p.numel() for p in model.parameters())


def test_qwen25_7b_parameters():
    """Qwen2.5-7B's config.json; 7,615,616,512 parameters, as its hub page counts them."""
    config = {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
    }
    assert count_parameters(config)["total"] == 7_615_616_512


def test_a_reward_head_model_counts_its_head_and_no_lm_head(tmp_path):
    from transformers import AutoConfig

    from inferscale.models.qwen_prm import load_qwen_prm
    from inferscale.models.tiny_checkpoints import build_tiny_prm

    folder = build_tiny_prm(tmp_path / "qwen", "qwen_prm")
    model = load_qwen_prm(str(folder), None)
    cost = reward_head_cost(AutoConfig.from_pretrained(folder))
    assert cost.total == sum(p.numel() for p in model.parameters())
    hidden = model.config.hidden_size
    backbone = ModelCost.from_config(model.config)
    assert cost.non_embedding == backbone.non_embedding + hidden * hidden + hidden
    assert cost.vocab == 2


def test_parameter_count_from_a_plain_dict_equals_the_config_object():
    config = tiny_config(tie_word_embeddings=True)
    fields = {name: getattr(config, name) for name in (*LLEMMA_7B, "head_dim")}
    assert count_parameters(fields) == count_parameters(config)


def test_llemma_7b_parameters():
    counts = count_parameters(LLEMMA_7B)
    assert counts == {
        "total": 6_738_546_688,
        "embedding": 2 * 32016 * 4096,
        "non_embedding": 6_476_271_616,
    }


def test_llemma_34b_parameters():
    counts = count_parameters(LLEMMA_34B)
    assert counts == {
        "total": 33_743_970_304,
        "embedding": 2 * 32000 * 8192,
        "non_embedding": 33_219_682_304,
    }


def test_paper_flops_reproduce_llemma_7b_greedy_on_math500():
    # Wu et al. report 3.92e12 FLOPs per question: ~291 generated tokens x 2 x 6.74e9 (total), or
    # ~303 tokens x 2 x 6.48e9 (non-embedding).
    cost = ModelCost.from_config(LLEMMA_7B)
    assert generation_flops(cost, 500, [291], "paper", "total") == 291 * 2 * 6_738_546_688
    assert f"{generation_flops(cost, 500, [291], 'paper', 'total'):.2e}" == "3.92e+12"
    assert f"{generation_flops(cost, 500, [303], 'paper', 'non_embedding'):.2e}" == "3.92e+12"


def test_nominal_sizes_give_the_papers_tokens_for_both_llemmas():
    # Table 4 of Wu et al.: greedy on MATH500 costs 3.92e12 FLOPs per question with Llemma-7B
    # and 19.0e12 with Llemma-34B; with the nominal sizes both are ~280 generated tokens.
    small = ModelCost.from_config(LLEMMA_7B, nominal=7e9)
    large = ModelCost.from_config(LLEMMA_34B, nominal=34e9)
    assert f"{generation_flops(small, 500, [280], 'paper', 'nominal'):.3g}" == "3.92e+12"
    assert f"{generation_flops(large, 500, [280], 'paper', 'nominal'):.3g}" == "1.9e+13"
    # With the total counts the two models imply different lengths: 291 and 282 tokens.
    assert 3.92e12 / (2 * small.total) == pytest.approx(291, abs=0.5)
    assert 19.0e12 / (2 * large.total) == pytest.approx(282, abs=0.5)
    with pytest.raises(ValueError, match="nominal size"):
        generation_flops(ModelCost.from_config(LLEMMA_7B), 500, [280], "paper", "nominal")


# d_attn 10, no logits: a token at position p costs 2 x 1000 + 4 x 2 x 10 x p.
SMALL = ModelCost(non_embedding=1000, total=1500, n_layer=2, d_model=10)


def test_forward_flops_sum_each_tokens_own_context():
    # positions 1..3: 3 x 2 x 1000 + 4 x 2 x 10 x (1 + 2 + 3)
    assert forward_flops(SMALL, 3) == 6000 + 480
    # positions 5..6 after 4 cached tokens: 2 x 2 x 1000 + 80 x (5 + 6)
    assert forward_flops(SMALL, 2, n_past=4) == 4000 + 880
    assert forward_flops(SMALL, 0, n_past=9) == 0


def test_attention_counts_queries_times_keys_and_weights_times_values():
    # 4 n_layer d_attn per position attended: 2 for q.k, 2 for the weighted sum of v; with
    # grouped or narrow heads d_attn = heads x head_dim, not d_model.
    config = tiny_config(head_dim=4)  # 6 heads of 4: d_attn 24, d_model 48
    cost = ModelCost.from_config(config)
    assert cost.d_attn == 24 and cost.vocab == 101
    body = 2 * cost.non_embedding
    assert forward_flops(cost, 1, n_past=9) == body + 4 * 3 * 24 * 10
    assert forward_flops(cost, 1, n_past=9, logits=1) == body + 4 * 3 * 24 * 10 + 2 * 48 * 101


def test_full_generation_flops_prefill_the_prompt_once_and_pay_a_row_of_logits_per_token():
    cost = ModelCost(non_embedding=1000, total=1500, n_layer=2, d_model=10, vocab=7)
    logits = 2 * 10 * 7
    # prompt of 3 tokens, then samples of 2 and 1 tokens.
    prefill = 3 * 2000 + 80 * (1 + 2 + 3)
    first_sample = 2 * 2000 + 80 * (4 + 5) + 2 * logits
    second_sample = 1 * 2000 + 80 * 4 + logits
    assert generation_flops(cost, 3, [2, 1], "full") == prefill + first_sample + second_sample


def test_paper_generation_flops_count_generated_tokens_only():
    assert generation_flops(SMALL, 3, [2, 1], "paper", "total") == 3 * 2 * 1500
    assert generation_flops(SMALL, 3, [2, 1], "paper", "non_embedding") == 3 * 2 * 1000
    assert generation_flops(SMALL, 3, [2, 1], "paper") == 3 * 2 * 1500


def test_full_flops_of_a_long_sequence_match_a_token_by_token_sum():
    cost = ModelCost.from_config(LLEMMA_7B)
    logits = 2 * 4096 * 32016
    per_token = sum(2 * cost.non_embedding + 4 * 32 * 4096 * p for p in range(1, 1025))
    assert generation_flops(cost, 1000, [24], "full") == per_token + 24 * logits


@pytest.mark.parametrize("config", [LLEMMA_7B, LLEMMA_34B], ids=["7B", "34B"])
def test_full_accounting_is_not_below_the_papers(config):
    # A MATH500-like question: ~100 prompt tokens, ~290 generated.
    cost = ModelCost.from_config(config)
    for params in ("total", "non_embedding"):
        paper = generation_flops(cost, 100, [290], "paper", params)
        assert generation_flops(cost, 100, [290], "full") > paper


def test_pool_flops_share_the_prompt_and_scale_with_the_samples_drawn():
    cost = ModelCost(non_embedding=1000, total=1500, n_layer=2, d_model=10, vocab=7)
    tokens = [4, 2, 6, 4]
    prefill = forward_flops(cost, 5)
    whole = generation_flops(cost, 5, tokens, "full")
    assert pool_flops(cost, 5, tokens, 4, "full") == pytest.approx(whole)
    assert pool_flops(cost, 5, tokens, 1, "full") == pytest.approx(prefill + (whole - prefill) / 4)
    assert pool_flops(cost, 5, tokens, 2, "paper") == pytest.approx(8 * 2 * 1500)


def test_unknown_settings_are_rejected():
    with pytest.raises(ValueError):
        generation_flops(SMALL, 3, [1], "kaplan")
    with pytest.raises(ValueError):
        generation_flops(SMALL, 3, [1], "paper", "all")
    with pytest.raises(ValueError):
        forward_flops(SMALL, -1)
    with pytest.raises(ValueError):
        count_parameters({"hidden_size": 8})
