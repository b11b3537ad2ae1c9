"""A word-level tokenizer for the synthetic task, saved as a Hugging Face tokenizer.

Every number is one token (with and without a leading space, GPT-2 style), so a step such as
`Step 2: 22 * 3 = 26 ки` is about ten tokens. Spaces and newlines are kept inside tokens, so
decoding is lossless and stop strings match the text the model produced.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}
SPLIT_PATTERN = r" ?\d+| ?[^\s\d]+|\n| "


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")


def build_tokenizer(corpus: list[str], max_number: int) -> PreTrainedTokenizerFast:
    """Vocabulary: special tokens, every piece of the corpus, all numbers below max_number."""
    pieces: set[str] = set()
    split = _pre_tokenizer().pre_tokenize_str
    for text in corpus:
        pieces.update(piece for piece, _ in split(text))
    for i in range(max_number):
        pieces.update((str(i), f" {i}"))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for piece in sorted(pieces):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.Fuse()
    bos = SPECIAL_TOKENS["bos_token"]
    # Prompts start with BOS, as with the hub tokenizers, so every backend sees the same ids.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    return directory
