"""Tiny PRM checkpoints in exactly each public format, made here without downloads.

Each builder writes a Hugging Face directory (config.json, safetensors weights, tokenizer files)
laid out as the upstream checkpoint of its format is: its architecture, its tokenizer's special
tokens and chat template, its head or candidate tokens. The weights are random (fixed seed).
The vocabularies cover the synthetic task's text (every number below `max_number`, the
operators, `Step`, `:`, `=`, `ки`, `The answer is:`) and the format's own text: word-level,
any other word `<unk>`, except Qwen's, a byte-level BPE as transformers rebuilds every Qwen2
tokenizer. They serve the tests and the evaluate-only example, where a real PRM cannot be
downloaded.

- inferscale: our tokenizer (`models/tokenizer.py`), a Llama, `prm.json` (" +"/" -").
- math_shepherd: a Mistral causal LM; a sentencepiece-style tokenizer (`▁` word starts, BOS
  added) in which "+" encodes to one piece `▁+` and the tag ` ки` to `▁ки`; no chat template.
- qwen_prm: the Qwen2 backbone plus the reward head (`Qwen2ForProcessRewardModel`); chatml
  tokens (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`), `<extra_0>`, Qwen2.5's chat template.
- rlhflow: a Llama causal LM; Llama-3's special tokens, BOS added, `\\n\\n` one token; Llama-3.1's
  chat template with its date system block.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from tokenizers import pre_tokenizers as pre
from transformers import PreTrainedTokenizerFast

from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import make_problem
from inferscale.models.prm import PRM_CONFIG_FILE
from inferscale.models.prm_formats import (
    QWEN_STEP_SEPARATOR,
    QWEN_SYSTEM_PROMPT,
    math_shepherd_text,
    qwen_messages,
    rlhflow_messages,
)

HIDDEN, LAYERS, HEADS, MAX_POSITIONS = 64, 2, 2, 1024
UNK = "<unk>"
OUR_CANDIDATES = (" +", " -")  # the project's word-level tokenizer keeps the space inside

# Qwen2.5's chat template (its tool-calling branches left out).
QWEN25_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM_PROMPT.replace("\\", "\\\\") + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Llama-3.1's chat template (its tool-calling branches left out): BOS, a system block with the
# knowledge cut-off and today's date (26 Jul 2024 unless `date_string` is given), each turn's
# text trimmed.
LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}"
    "{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def task_items(max_number: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(question, steps) pairs of the synthetic task at levels 1-5, whose text the tiny
    vocabularies cover."""
    rng = random.Random(seed)
    modulus = max(max_number, 10)
    items = []
    for i in range(50):
        problem = make_problem(rng, 1 + i % 5, modulus, StepFormat().answer_phrase, f"t{i}")
        items.append((problem.question, list(problem.steps)))
    return items


def _word_level(
    texts: Iterable[str],
    numbers: Iterable[str],
    special: list[str],
    split: pre.PreTokenizer,
    normalizer: normalizers.Normalizer | None = None,
) -> Tokenizer:
    """A word-level tokenizer over the pieces of `texts` (special tokens cut out first) and
    `numbers`, with the special tokens first in the vocabulary."""
    pieces: set[str] = set(numbers)
    cut = Regex("|".join(re.escape(s) for s in special))
    for text in texts:
        for segment, _ in pre.Split(cut, behavior="removed").pre_tokenize_str(text):
            if normalizer is not None:
                segment = normalizer.normalize_str(segment)
            pieces.update(piece for piece, _ in split.pre_tokenize_str(segment))
    vocab = {token: i for i, token in enumerate([UNK, *special])}
    for piece in sorted(pieces):
        vocab.setdefault(piece, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = split
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    return tokenizer


def _render(template: str, conversations: Iterable[list[dict]], **tokens: str) -> list[str]:
    """The conversations through a chat template (only the template's text is needed)."""
    probe = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({UNK: 0}, unk_token=UNK)),
        chat_template=template,
        **tokens,
    )
    return [
        probe.apply_chat_template(c, tokenize=False, add_generation_prompt=False)
        for c in conversations
    ]


def _byte_level_bpe(texts: Iterable[str], special: list[str]) -> Tokenizer:
    """A byte-level BPE trained on `texts` until every word is one token, split as Qwen2's
    tokenizer splits (transformers builds Qwen2 tokenizers itself from the vocabulary and
    merges, so the tiny one must be one it can build)."""
    from tokenizers import trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre.Sequence(
        [
            pre.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    cut = Regex("|".join(re.escape(s) for s in special))
    segments = [
        segment
        for text in texts
        for segment, _ in pre.Split(cut, behavior="removed").pre_tokenize_str(text)
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,  # no limit: merge until every word is one token
        special_tokens=special,
        initial_alphabet=pre.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(segments, trainer)
    return tokenizer


def _gpt_split(newlines: str) -> pre.PreTokenizer:
    """Words with their leading space (GPT-2 style, as byte-level BPE tokenizers split)."""
    return pre.Split(Regex(rf" ?\d+| ?[^\s\d]+|{newlines}| +"), behavior="isolated")


def _spaced_numbers(max_number: int) -> list[str]:
    return [form for i in range(max(max_number, 10)) for form in (str(i), f" {i}")]


def _causal_config(kind: str, tokenizer: PreTrainedTokenizerFast, **extra):
    from transformers import LlamaConfig, MistralConfig

    config_class = {"llama": LlamaConfig, "mistral": MistralConfig}[kind]
    return config_class(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _save(model, tokenizer: PreTrainedTokenizerFast, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)  # safetensors
    tokenizer.save_pretrained(directory)
    return directory


def _causal_lm(config, seed: int):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def tiny_inferscale_prm(directory: str | Path, seed: int = 0, max_number: int = 100) -> Path:
    """A PRM as `train_prm` writes one (untrained): our tokenizer, a Llama, `prm.json`."""
    from inferscale.models.factory import new_tiny_llama, tiny_llama_config
    from inferscale.models.tokenizer import build_tokenizer

    fmt = StepFormat()
    corpus = [fmt.prompt(q) + fmt.solution(steps) for q, steps in task_items(max_number)]
    tokenizer = build_tokenizer(corpus, max(max_number, 10))
    config = tiny_llama_config(HIDDEN, LAYERS, HEADS, 2 * HIDDEN, tokenizer, MAX_POSITIONS)
    directory = _save(new_tiny_llama(config, seed), tokenizer, Path(directory))
    good, bad = OUR_CANDIDATES
    settings = {"format": asdict(fmt), "good_token": good, "bad_token": bad}
    (directory / PRM_CONFIG_FILE).write_text(json.dumps(settings, indent=2))
    return directory


def tiny_math_shepherd_prm(directory: str | Path, seed: int = 0, max_number: int = 100) -> Path:
    """A Mistral causal LM with a Llama-like sentencepiece-style tokenizer (`▁` word starts,
    BOS added, "+" and "-" single pieces), read at ` ки` as Math-Shepherd's PRM is."""
    special = ["<s>", "</s>"]
    # Llama's legacy normalizer: a word-start mark before the text and for every space.
    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    split = pre.Split(Regex(r"▁?[0-9]+|▁?[^0-9▁\n]+|\n|▁"), behavior="isolated")
    texts = [math_shepherd_text(q, steps) for q, steps in task_items(max_number)]
    numbers = [f"{mark}{i}" for i in range(max(max_number, 10)) for mark in ("", "▁")]
    tokenizer = _word_level([*texts, "+ -"], numbers, special, split, normalizer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token=UNK
    )
    config = _causal_config("mistral", fast, sliding_window=None, tie_word_embeddings=False)
    return _save(_causal_lm(config, seed), fast, Path(directory))


def tiny_qwen_prm(directory: str | Path, seed: int = 0, max_number: int = 100) -> Path:
    """A Qwen2 backbone and reward head (`Qwen2ForProcessRewardModel`) with chatml tokens,
    `<extra_0>` and Qwen2.5's chat template."""
    import torch
    from transformers import Qwen2Config

    from inferscale.models.qwen_prm import ARCHITECTURE, Qwen2ForProcessRewardModel

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", QWEN_STEP_SEPARATOR]
    texts = _render(QWEN25_CHAT_TEMPLATE, (qwen_messages(q, s) for q, s in task_items(max_number)))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(texts, special),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=QWEN25_CHAT_TEMPLATE,
    )
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=1,  # grouped-query attention, as the 7B's 28 heads over 4
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        bos_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    # The upstream config names its remote code; nothing here runs it.
    config.auto_map = {"AutoModel": f"modeling_qwen2_rm.{ARCHITECTURE}"}
    torch.manual_seed(seed)
    return _save(Qwen2ForProcessRewardModel(config), fast, Path(directory))


def tiny_rlhflow_prm(directory: str | Path, seed: int = 0, max_number: int = 100) -> Path:
    """A Llama causal LM with Llama-3's special tokens and Llama-3.1's chat template."""
    bos, eos = "<|begin_of_text|>", "<|eot_id|>"
    special = [bos, "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", eos]
    conversations = (rlhflow_messages(q, s) for q, s in task_items(max_number))
    texts = _render(LLAMA31_CHAT_TEMPLATE, conversations, bos_token=bos, eos_token=eos)
    numbers = _spaced_numbers(max_number)
    # "\n\n" is one token and "+" after it another, as with Llama-3's tokenizer.
    tokenizer = _word_level([*texts, "+", "-"], numbers, special, _gpt_split(r"\n+"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    tokenizer.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        unk_token=UNK,
        chat_template=LLAMA31_CHAT_TEMPLATE,
    )
    config = _causal_config("llama", fast, tie_word_embeddings=False)
    return _save(_causal_lm(config, seed), fast, Path(directory))


TINY_BUILDERS: dict[str, Callable[..., Path]] = {
    "inferscale": tiny_inferscale_prm,
    "math_shepherd": tiny_math_shepherd_prm,
    "qwen_prm": tiny_qwen_prm,
    "rlhflow": tiny_rlhflow_prm,
}


def build_tiny_prm(
    directory: str | Path, prm_format: str, seed: int = 0, max_number: int = 100
) -> Path:
    """A tiny random PRM checkpoint in `prm_format` written to `directory`, which it returns.
    Its vocabulary covers the synthetic task with numbers below `max_number`."""
    if prm_format not in TINY_BUILDERS:
        raise ValueError(
            f"unknown PRM format {prm_format!r}; pick one of {', '.join(TINY_BUILDERS)}"
        )
    return TINY_BUILDERS[prm_format](directory, seed=seed, max_number=max_number)
