"""How a causal LM is read as a process reward model (PRM), shared by training and scoring.

Math-Shepherd's way: the input is the prompt and the solution with the step tag after every
step; at each tag the logits of two candidate tokens, good (`+`) and bad (`-`), are compared,
and softmax over just those two gives P(step correct). The official PRM encodes `ки` and takes
its last token id, then reads every position holding that id. Here the positions are found from
the text instead: the token covering the tag's last character, via the tokenizer's offsets. With
the project's word-level tokenizer ` ки` is one token; with a sentencepiece tokenizer the tag may
be split or merged with its space, and its last token is still the one read. A tag token that
happens to occur inside a question is never mistaken for a step's tag.

Training uses the same reading. The loss is the cross-entropy between the two-way softmax at
each tag and the step's label as a target distribution: soft label y gives target (y, 1 - y)
(Math-Shepherd's "soft estimation"); hard labels are the 0/1 case ("hard estimation", which the
released Math-Shepherd PRM used). Chosen over an LM loss on the `+`/`-` token over the whole
vocabulary because it trains exactly the quantity read at inference, takes soft targets, and
leaves the rest of the vocabulary's logits alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from transformers import PreTrainedTokenizerBase

from inferscale.data.steps import StepFormat

if TYPE_CHECKING:
    from inferscale.data.step_labels import StepLabelled

# Math-Shepherd's candidate strings. The official PRM takes its ids from `encode("+ -")[1:]`,
# word-start pieces (`▁+`, `▁-`) with Llama-family tokenizers, which is what "+" alone encodes
# to where the tokenizer adds a prefix space (no hub tokenizer could be checked offline). The
# project's word-level tokenizer keeps the space inside its operator tokens: " +" and " -".
GOOD_TOKEN = "+"
BAD_TOKEN = "-"
NOT_A_TAG = -1.0  # step target at positions that are not tags
PRM_CONFIG_FILE = "prm.json"  # how a trained PRM dir is read: format and candidate tokens


def candidate_token_ids(
    tokenizer: PreTrainedTokenizerBase, good: str = GOOD_TOKEN, bad: str = BAD_TOKEN
) -> tuple[int, int]:
    """Token ids of the good and bad candidates; each string must be exactly one known token."""
    ids = []
    for role, text in (("good", good), ("bad", bad)):
        pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1 or pieces[0] == tokenizer.unk_token_id:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            raise ValueError(
                f"the PRM's {role} token {text!r} must be one token of the tokenizer, but it "
                f"encodes to {shown}; pick a string that is one token (a tokenizer that keeps "
                f"the leading space inside its tokens has {' ' + text.strip()!r})"
            )
        ids.append(pieces[0])
    if ids[0] == ids[1]:
        raise ValueError(f"the PRM's good and bad tokens are the same token ({good!r}, {bad!r})")
    return ids[0], ids[1]


def encode_steps(
    tokenizer: PreTrainedTokenizerBase, fmt: StepFormat, question: str, steps: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Token ids of `fmt.prompt(question) + fmt.solution(steps)` and, per step, the position of
    the last token of its tag."""
    return encode_many_steps(tokenizer, fmt, [(question, steps)])[0]


def step_layout(fmt: StepFormat, question: str, steps: Sequence[str]) -> tuple[str, int, list[int]]:
    """The text `fmt.prompt(question) + fmt.solution(steps)`, the length of its prompt, and the
    index of each step tag's last character."""
    prompt = fmt.prompt(question)
    tag_ends = []
    offset = len(prompt)
    for k, step in enumerate(steps, 1):
        line = fmt.step_line(k, step)
        tag_ends.append(offset + line.rindex(fmt.tag) + len(fmt.tag) - 1)
        offset += len(line)
    return prompt + fmt.solution(list(steps)), len(prompt), tag_ends


def locate_tokens(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    chars: Sequence[Sequence[int]],
    add_special_tokens: bool = True,
) -> list[tuple[list[int], list[int | None]]]:
    """Token ids of each text (one call to the tokenizer) and the position of the token that
    covers each of its given characters, None where no token does."""
    encoded = tokenizer(
        list(texts), return_offsets_mapping=True, add_special_tokens=add_special_tokens
    )
    out = []
    for text_chars, ids, offsets in zip(
        chars, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        owner: dict[int, int] = {}
        for position, (start, end) in enumerate(offsets):
            for char in range(start, end):
                owner[char] = position  # a later token sharing a character (byte pieces) wins
        out.append((list(ids), [owner.get(c) for c in text_chars]))
    return out


def encode_many_steps(
    tokenizer: PreTrainedTokenizerBase,
    fmt: StepFormat,
    items: Sequence[tuple[str, Sequence[str]]],
) -> list[tuple[list[int], list[int]]]:
    """`encode_steps` of every (question, steps) pair, with one call to the tokenizer."""
    layouts = [step_layout(fmt, question, steps) for question, steps in items]
    if not layouts:
        return []
    located = locate_tokens(tokenizer, [t for t, _, _ in layouts], [c for _, _, c in layouts])
    out = []
    for (text, _, _), (ids, positions) in zip(layouts, located, strict=True):
        missing = [k for k, p in enumerate(positions, 1) if p is None]
        if missing:
            raise ValueError(f"no token covers the tag of step(s) {missing} in {text!r}")
        if len(set(positions)) != len(positions):
            raise ValueError(f"two step tags fall in one token in {text!r}")
        out.append((ids, positions))
    return out


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask: a causal model's outputs at real positions do not
    depend on the padding after them, and positions count from 0 in every row."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, s in enumerate(sequences):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask


def encode_labelled(
    tokenizer: PreTrainedTokenizerBase,
    fmt: StepFormat,
    record: StepLabelled,
    max_length: int,
    label: Literal["soft", "hard"] = "soft",
) -> dict | None:
    """A training example: the ids of the tagged solution and a target per position, the
    step's label at its tag and NOT_A_TAG elsewhere. Steps whose tag falls beyond max_length
    are dropped; None when all are."""
    ids, positions = encode_steps(tokenizer, fmt, record.question, record.steps)
    labels = record.soft_labels if label == "soft" else [float(h) for h in record.hard_labels]
    ids = ids[:max_length]
    targets = [NOT_A_TAG] * len(ids)
    for position, target in zip(positions, labels, strict=True):
        if position < max_length:
            targets[position] = float(target)
    if all(t == NOT_A_TAG for t in targets):
        return None
    return {"input_ids": ids, "step_targets": targets}


def collate_labelled(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded batch of `encode_labelled` examples; padding is NOT_A_TAG."""
    ids, mask = pad_right([e["input_ids"] for e in examples], pad_id)
    targets = torch.full(ids.shape, NOT_A_TAG, dtype=torch.float32)
    for row, e in enumerate(examples):
        targets[row, : len(e["step_targets"])] = torch.tensor(e["step_targets"])
    return {"input_ids": ids, "attention_mask": mask, "step_targets": targets}


def candidate_logits(logits: torch.Tensor, candidates: tuple[int, int]) -> torch.Tensor:
    """The (good, bad) logits at every position, in float32: [..., 2]."""
    return logits[..., list(candidates)].float()


def step_probabilities(logits: torch.Tensor, candidates: tuple[int, int]) -> torch.Tensor:
    """P(step correct) at every position: softmax over the two candidate logits, good's share."""
    return torch.softmax(candidate_logits(logits, candidates), dim=-1)[..., 0]


def step_loss(
    logits: torch.Tensor, step_targets: torch.Tensor, candidates: tuple[int, int]
) -> torch.Tensor:
    """Mean cross-entropy over tag positions between the two-way softmax and the soft label.

    `step_targets` has the label in [0, 1] at tag positions and NOT_A_TAG elsewhere. Every tag
    counts once, so long solutions weigh more than short ones (as a token-level LM loss would).
    """
    at_tag = step_targets >= 0
    if not at_tag.any():  # every tag cut off by max_length: no signal, but keep the graph
        return logits.sum() * 0.0
    log_probs = torch.log_softmax(candidate_logits(logits[at_tag], candidates), dim=-1)
    target = step_targets[at_tag].float()
    return -(target * log_probs[:, 0] + (1 - target) * log_probs[:, 1]).mean()
