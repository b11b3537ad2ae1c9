from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from inferscale.generation.base import Completion, Request, Sample
from inferscale.generation.hf import HFBackend, sample_tokens

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "big", "red", "sun"]
WORDS += ["moon", "star", "sky", "sea", "tree", "cup", "box"]
SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
EOS_ID = 2
PROMPTS = ["the cat", "a big red dog sat on the mat", "sun", "the sky and the sea ran"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    pieces = [*SPECIAL.values(), "\n", " ", *WORDS, *(f" {word}" for word in WORDS)]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    # Spaces stay inside tokens and Fuse joins them back, so decoding is lossless; words split
    # from each other even where the random model wrote no space between them, so that a prompt
    # plus its sampled text tokenizes back to the tokens the model read.
    words = "|".join(sorted(WORDS, key=len, reverse=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(
        Regex(rf" ?(?:{words})|\n| |[^\s]+"), behavior="isolated"
    )
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL)


def build_model(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        # Wide weights give peaked next-token distributions, so greedy picks are not near-ties.
        initializer_range=0.3,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=EOS_ID,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(directory)
    build_model(len(tokenizer)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> HFBackend:
    return HFBackend.from_pretrained(model_dir, dtype=torch.float32, show_progress=False)


def hf_greedy_ids(backend: HFBackend, prompt: str, max_new_tokens: int) -> list[int]:
    """HF generate on the prompt alone (no padding), up to and including an eos."""
    input_ids = backend.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        output = backend.model.generate(
            input_ids, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=0
        )
    return output[0, input_ids.shape[1] :].tolist()


def decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def expected_stop_sample(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], stops: tuple[str, ...]
) -> Sample:
    """The spec, naively: the first prefix whose full decode holds a stop string, or length."""
    for count in range(1, len(ids) + 1):
        text = decode(tokenizer, ids[:count])
        ends = [text.index(stop) + len(stop) for stop in stops if stop in text]
        if ends:
            return Sample(text[: min(ends)], count, "stop")
    return Sample(decode(tokenizer, ids), len(ids), "length")


def test_greedy_matches_hf_generate_across_padded_batch(backend: HFBackend) -> None:
    max_new_tokens = 20
    completions = backend.generate(
        [Request(p, temperature=0.0, max_new_tokens=max_new_tokens) for p in PROMPTS]
    )
    for prompt, completion in zip(PROMPTS, completions, strict=True):
        ids = hf_greedy_ids(backend, prompt, max_new_tokens)
        if EOS_ID in ids:
            end = ids.index(EOS_ID)
            expected = Sample(decode(backend.tokenizer, ids[:end]), end + 1, "eos")
        else:
            expected = Sample(decode(backend.tokenizer, ids), len(ids), "length")
        assert completion.samples == [expected]


def test_prompt_tokens_and_length_finish(backend: HFBackend) -> None:
    prompt = PROMPTS[1]
    [completion] = backend.generate([Request(prompt, n=2, temperature=0.0, max_new_tokens=5)])
    assert completion.prompt_tokens == len(backend.tokenizer(prompt)["input_ids"]) == 8
    assert [(s.num_tokens, s.finish_reason) for s in completion.samples] == [(5, "length")] * 2


def test_stop_strings_truncate_and_count_tokens(backend: HFBackend) -> None:
    prompt, max_new_tokens = PROMPTS[2], 10
    ids = hf_greedy_ids(backend, prompt, max_new_tokens)
    token_texts = [decode(backend.tokenizer, [i]) for i in ids]
    assert EOS_ID not in ids and all(token_texts), "the greedy output should be plain words"
    whole_token = token_texts[3]
    stop_sets = [
        (whole_token,),
        ("".join(token_texts[2:5]),),  # spans three tokens
        (token_texts[5][:3],),  # ends inside a token
        ("zzz", token_texts[5], token_texts[2]),  # the earliest occurrence wins, not list order
        ("zzz",),
    ]
    completions = backend.generate(
        [Request(prompt, temperature=0.0, max_new_tokens=max_new_tokens, stop=s) for s in stop_sets]
    )
    for stops, completion in zip(stop_sets, completions, strict=True):
        assert completion.samples == [expected_stop_sample(backend.tokenizer, ids, stops)]
    first = completions[0].samples[0]
    assert first.finish_reason == "stop" and first.text.endswith(whole_token)
    assert first.num_tokens == token_texts.index(whole_token) + 1
    assert completions[-1].samples[0].finish_reason == "length"


def test_eos_finishes_without_eos_text(backend: HFBackend) -> None:
    prompts = [PROMPTS[0], PROMPTS[3]]
    completions = backend.generate(
        [Request(p, temperature=0.0, max_new_tokens=20) for p in prompts]
    )
    for prompt, completion in zip(prompts, completions, strict=True):
        ids = hf_greedy_ids(backend, prompt, 20)
        assert ids[-1] == EOS_ID, "the random model should end these prompts with eos"
        assert completion.samples == [Sample(decode(backend.tokenizer, ids[:-1]), len(ids), "eos")]
    assert completions[1].samples == [Sample("", 1, "eos")]


def test_seeded_samples_do_not_depend_on_batching(backend: HFBackend) -> None:
    target = Request(PROMPTS[0], n=4, temperature=1.0, max_new_tokens=12, seed=7)
    [alone] = backend.generate([target])
    others_before = Request(PROMPTS[1], n=3, temperature=0.7, top_p=0.9, max_new_tokens=8)
    others_after = Request(PROMPTS[2], n=5, temperature=1.0, max_new_tokens=15, stop=(" the",))
    small_batches = HFBackend(backend.model, backend.tokenizer, batch_size=3, show_progress=False)
    for runner in (backend, small_batches):
        mixed = runner.generate([others_before, target, others_after])
        assert mixed[1] == alone
    assert backend.generate([target]) == [alone]
    # Sample i uses seed + i, so the same request shifted by one seed drops the first sample.
    [shifted] = backend.generate([Request(PROMPTS[0], n=3, max_new_tokens=12, seed=8)])
    assert shifted.samples == alone.samples[1:]
    assert len({sample.text for sample in alone.samples}) > 1


# The samples of one request share one prefill of the prompt: each must come out as if its
# prompt had been read on its own.
def test_samples_sharing_a_prefill_equal_requests_read_alone(backend: HFBackend) -> None:
    prompt, n = PROMPTS[1], 5
    shared = backend.generate(
        [Request(prompt, n=n, temperature=1.0, max_new_tokens=10, seed=3, stop=(" the",))]
    )
    alone = backend.generate(
        [
            Request(prompt, n=1, temperature=1.0, max_new_tokens=10, seed=3 + i, stop=(" the",))
            for i in range(n)
        ]
    )
    assert shared[0].samples == [c.samples[0] for c in alone]
    assert len({s.text for s in shared[0].samples}) > 1


# A tree search's next round continues each sample that stopped at a step from its prompt and
# text: the backend keeps such samples' KV and runs only what the cache lacks.
def test_continuations_read_their_prefix_from_the_cache(model_dir: Path) -> None:
    stop = (" the", " a")
    first = [
        Request(p, n=3, temperature=1.0, max_new_tokens=12, seed=5, stop=stop) for p in PROMPTS
    ]
    runs = []
    for cache_bytes in (2**30, 0):
        runner = HFBackend.from_pretrained(
            model_dir, dtype=torch.float32, show_progress=False, prefix_cache_bytes=cache_bytes
        )
        completions = runner.generate(first)
        # Continued where the text tokenizes back to the tokens the model read: the random
        # model also samples special tokens, which decode to nothing.
        follow = [
            Request(r.prompt + s.text, n=2, temperature=1.0, max_new_tokens=12, seed=9, stop=stop)
            for r, c in zip(first, completions, strict=True)
            for s in c.samples
            if s.finish_reason == "stop"
            and len(runner.tokenizer(r.prompt + s.text)["input_ids"])
            == c.prompt_tokens + s.num_tokens
        ]
        before = runner.prefill_tokens
        runs.append((completions, runner.generate(follow), runner.prefill_tokens - before))
        kept = runner._prefix_bytes
    (cached, cached_follow, cached_prefill), (plain, plain_follow, plain_prefill) = runs
    assert cached == plain and cached_follow == plain_follow
    assert len(follow) >= 4 and kept == 0
    # Each continuation runs one token, its parent's stop token (sampled, never run).
    assert cached_prefill == len(follow)
    assert plain_prefill == sum(
        len(ids) for ids in runner.tokenizer([r.prompt for r in follow])["input_ids"]
    )


def test_the_prefix_cache_keeps_only_stopped_samples_within_its_budget(model_dir: Path) -> None:
    runner = HFBackend.from_pretrained(model_dir, dtype=torch.float32, show_progress=False)
    runner.generate([Request(p, n=2, max_new_tokens=6, seed=1) for p in PROMPTS])
    assert runner._prefix_bytes == 0  # eos and length: whole answers, never continued
    requests = [Request(p, n=4, max_new_tokens=12, seed=2, stop=(" the",)) for p in PROMPTS]
    completions = runner.generate(requests)
    stopped = sum(s.finish_reason == "stop" for c in completions for s in c.samples)
    assert stopped >= 3 and len(runner._prefixes) == stopped
    one = max(kv.numel() * kv.element_size() for kv in runner._prefixes.values())
    small = HFBackend(
        runner.model, runner.tokenizer, show_progress=False, prefix_cache_bytes=2 * one
    )
    small.generate(requests)
    assert 0 < small._prefix_bytes <= 2 * one and len(small._prefixes) <= 2
    runner.clear_cache()
    assert runner._prefix_bytes == 0 and not runner._prefixes


def test_tiny_top_p_is_greedy(backend: HFBackend) -> None:
    requests = [
        Request(p, n=3, temperature=1.0, top_p=1e-6, max_new_tokens=10, seed=3) for p in PROMPTS
    ]
    greedy = backend.generate([Request(p, temperature=0.0, max_new_tokens=10) for p in PROMPTS])
    for nucleus, reference in zip(backend.generate(requests), greedy, strict=True):
        assert nucleus.samples == reference.samples * 3


def test_sample_tokens_follows_temperature_and_top_p() -> None:
    draws = 10_000
    uniforms = torch.arange(1, draws + 1) / draws  # an even grid over (0, 1]
    logits = torch.tensor([0.5, 0.3, 0.2]).log().expand(draws, 3)

    def frequencies(temperature: float, top_p: float) -> list[float]:
        tokens = sample_tokens(
            logits, torch.full((draws,), temperature), torch.full((draws,), top_p), uniforms
        )
        return (torch.bincount(tokens, minlength=3) / draws).tolist()

    assert frequencies(1.0, 1.0) == pytest.approx([0.5, 0.3, 0.2], abs=1e-3)
    assert frequencies(1.0, 0.6) == pytest.approx([0.625, 0.375, 0.0], abs=1e-3)
    assert frequencies(1.0, 0.5) == [1.0, 0.0, 0.0]
    assert frequencies(0.0, 1.0) == [1.0, 0.0, 0.0]
    flattened = torch.tensor([0.5, 0.3, 0.2]).sqrt()
    assert frequencies(2.0, 1.0) == pytest.approx((flattened / flattened.sum()).tolist(), abs=1e-3)


def test_invalid_or_empty_input(backend: HFBackend) -> None:
    assert backend.generate([]) == []
    with pytest.raises(ValueError, match="empty stop string"):
        backend.generate([Request("the cat", stop=("",))])
    with pytest.raises(ValueError, match="top_p"):
        backend.generate([Request("the cat", top_p=0.0)])


def test_close_releases_the_model(model_dir: Path) -> None:
    backend = HFBackend.from_pretrained(model_dir, show_progress=False)
    assert isinstance(backend.generate([Request("the cat", max_new_tokens=2)])[0], Completion)
    backend.close()
    assert not hasattr(backend, "model")
