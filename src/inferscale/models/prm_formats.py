"""How each public PRM format reads (question, steps): one adapter per `prm.format`.

An adapter lays a (question, steps) pair out as text, says which token each step is read at
and where the question's prompt ends, and which two outputs at a read position give
P(step correct) = softmax over the two, the first one's share. The scorer (`prm_scorer.py`)
does the rest for every format alike: batches, reads in chunks (the prompt, then each step
through its read position) on top of cached prefixes. A step's read position lies on a prefix
of the text that the longer solutions of the same steps share in every format below, so tree
search reads each new step once in all of them.

- `inferscale`: our own PRMs. The experiment's step format (`prm.json` of a trained PRM):
  `fmt.prompt(question)` then `Step k: <text> ки` lines; read at the last token of each tag;
  outputs: the logits of the good and bad candidate tokens (`prm.json`, default " +"/" -").
- `math_shepherd` (peiyi9979/math-shepherd-mistral-7b-prm): plain text
  `question + " " + "\\n".join("Step k: <text> ки")`, as its model card builds it, with the
  tokenizer's BOS; read at each ` ки` tag itself (no shift); outputs: the logits of `+` and `-`,
  taken as its code takes them, `encode("+ -")` without the BOS, which must be two tokens
  ("▁+", "▁-" with its sentencepiece tokenizer).
- `qwen_prm` (Qwen/Qwen2.5-Math-PRM-7B, -72B): the tokenizer's chat template with the system
  prompt "Please reason step by step, and put your final answer within \\boxed{}.", the
  question as the user turn and the assistant turn `"<extra_0>".join(steps) + "<extra_0>"`,
  tokenized as the model card does (`tokenizer.encode` of the rendered text); read at each
  `<extra_0>`; the model is the Qwen2 backbone with a two-way head at every position
  (`qwen_prm.py`, no remote code), outputs: class 1 (right) against class 0.
- `rlhflow` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, -Mistral-Data): a Llama-3.1 causal LM read
  as a multi-turn chat through the tokenizer's chat template (Llama-3.1's adds its date system
  block): user turn 1 = question + " " + step 1, user turn k = step k, every assistant turn
  "+". Step k is read at the token just before its assistant "+" (the official code reads
  position -3 of the text ending in "+<|eot_id|>"); outputs: the logits of `+` and `-`
  (`encode("+")[-1]`, `encode("-")[-1]`).

`check_prm_format` tells, from the checkpoint's config, tokenizer and weight names alone,
whether a checkpoint can be read in a format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import get_args

from transformers import PreTrainedTokenizerBase

from inferscale.config import PRMFormat
from inferscale.data.steps import StepFormat
from inferscale.models.prm import (
    BAD_TOKEN,
    GOOD_TOKEN,
    PRM_CONFIG_FILE,
    candidate_token_ids,
    locate_tokens,
    step_layout,
)
from inferscale.models.qwen_prm import ARCHITECTURE as QWEN_PRM_ARCHITECTURE
from inferscale.models.qwen_prm import HEAD_WEIGHTS

PRM_FORMATS = get_args(PRMFormat)
MATH_SHEPHERD_TAG = " ки"
QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_STEP_SEPARATOR = "<extra_0>"
QWEN_OUTPUTS = (1, 0)  # head classes: P(step right) is class 1's share
RLHFLOW_GOOD, RLHFLOW_BAD = "+", "-"


@dataclass(frozen=True)
class Layout:
    """One (question, steps) pair as text."""

    text: str
    prompt_end: int  # characters of the question's prompt
    reads: list[int]  # per step, a character of the token that marks the step's end


@dataclass(frozen=True)
class EncodedSteps:
    ids: list[int]
    reads: list[int]  # per step, the position whose output gives its probability
    prompt: int  # tokens of the question's prompt (a chunk boundary only)


@dataclass(frozen=True)
class StepReader:
    """How a PRM in one format turns (question, steps) pairs into tokens and read positions."""

    prm_format: str
    tokenizer: PreTrainedTokenizerBase
    layout: Callable[[str, Sequence[str]], Layout]
    outputs: tuple[int, int]  # (good, bad) indices into the model's output at a read position
    marker: int | None = None  # the token id each step's end must be, where the format has one
    read_before: bool = False  # read the position before each marker (the model predicts it)
    add_special_tokens: bool = True

    def encode(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[EncodedSteps]:
        if not items:
            return []
        layouts = [self.layout(question, steps) for question, steps in items]
        located = locate_tokens(
            self.tokenizer,
            [lay.text for lay in layouts],
            [[max(0, lay.prompt_end - 1), *lay.reads] for lay in layouts],
            self.add_special_tokens,
        )
        return [
            self._positions(lay, ids, positions)
            for lay, (ids, positions) in zip(layouts, located, strict=True)
        ]

    def _positions(self, lay: Layout, ids: list[int], positions: list[int | None]) -> EncodedSteps:
        prompt, *marks = positions
        missing = [k for k, p in enumerate(marks, 1) if p is None]
        if missing:
            raise ValueError(f"no token covers the end of step(s) {missing} in {lay.text!r}")
        if len(set(marks)) != len(marks):
            raise ValueError(f"two steps end in one token in {lay.text!r}")
        if self.marker is not None:
            wrong = [k for k, p in enumerate(marks, 1) if ids[p] != self.marker]
            if wrong:
                shown = self.tokenizer.convert_ids_to_tokens([ids[marks[wrong[0] - 1]]])
                raise ValueError(
                    f"step(s) {wrong} of a {self.prm_format} PRM's input end in {shown} instead "
                    f"of its marker token in {lay.text!r}"
                )
        reads = [p - 1 for p in marks] if self.read_before else marks
        no_prompt = not lay.prompt_end or prompt is None
        return EncodedSteps(ids, reads, 0 if no_prompt else prompt + 1)


# --- layouts -----------------------------------------------------------------------------------


def inferscale_layout(fmt: StepFormat, question: str, steps: Sequence[str]) -> Layout:
    text, prompt_end, tag_ends = step_layout(fmt, question, steps)
    return Layout(text, prompt_end, tag_ends)


def math_shepherd_text(question: str, steps: Sequence[str]) -> str:
    """The model card's input: `f"{question} {output}"`, steps one per line, each tagged."""
    lines = [f"Step {k}: {step}{MATH_SHEPHERD_TAG}" for k, step in enumerate(steps, 1)]
    return f"{question} " + "\n".join(lines)


def math_shepherd_layout(question: str, steps: Sequence[str]) -> Layout:
    text = math_shepherd_text(question, steps)
    reads, end = [], len(question) + 1
    for k, step in enumerate(steps, 1):
        end += len(f"Step {k}: {step}{MATH_SHEPHERD_TAG}")
        reads.append(end - 1)
        end += 1  # the newline
    return Layout(text, len(question), reads)


def qwen_messages(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    """The model card's conversation."""
    return [
        {"role": "system", "content": QWEN_SYSTEM_PROMPT},
        {"role": "user", "content": question},
        {"role": "assistant", "content": QWEN_STEP_SEPARATOR.join(steps) + QWEN_STEP_SEPARATOR},
    ]


def rlhflow_messages(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    """The official code's conversation: every step a user turn, every answer "+"."""
    messages = []
    for k, step in enumerate(steps):
        messages.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
        messages.append({"role": "assistant", "content": RLHFLOW_GOOD})
    return messages


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def qwen_layout(tokenizer: PreTrainedTokenizerBase, question: str, steps: Sequence[str]) -> Layout:
    # Found from the end: the assistant turn is the last thing the template writes before its
    # closing, so the system block can hold any text.
    text = _render(tokenizer, qwen_messages(question, steps))
    reads: list[int] = []
    limit = len(text)
    for step in reversed(steps):
        separator = text.rfind(QWEN_STEP_SEPARATOR, 0, limit)
        start = separator - len(step)
        if separator < 0 or text[start:separator] != step:
            raise ValueError(f"the chat template does not write step {step!r} as given")
        reads.append(separator + len(QWEN_STEP_SEPARATOR) - 1)
        limit = start
    asked = text.rfind(question, 0, limit)
    if asked < 0:
        raise ValueError(f"the chat template does not write the question {question!r} as given")
    return Layout(text, asked + len(question), reads[::-1])


def rlhflow_layout(
    tokenizer: PreTrainedTokenizerBase, question: str, steps: Sequence[str]
) -> Layout:
    # From the end, as above; Llama-3.1's template trims each turn's text.
    messages = rlhflow_messages(question, steps)
    text = _render(tokenizer, messages)
    reads: list[int] = []
    limit = len(text)
    for turn in reversed(messages[::2]):
        good = text.rfind(RLHFLOW_GOOD, 0, limit)
        content = turn["content"].strip()
        start = text.rfind(content, 0, good)
        if good < 0 or start < 0:
            raise ValueError(f"the chat template does not write the turn {content!r} as given")
        reads.append(good)
        limit = start
    return Layout(text, limit + len(question.strip()), reads[::-1])


# --- readers -----------------------------------------------------------------------------------


def our_settings(
    checkpoint: str | Path,
    prm_format: str,
    fmt: StepFormat | None = None,
    good_token: str | None = None,
    bad_token: str | None = None,
) -> tuple[StepFormat | None, str | None, str | None]:
    """Our own format's step format and candidate tokens: those given, else those the PRM was
    trained with (its `prm.json`); nothing for the public formats, which fix theirs."""
    if prm_format != "inferscale":
        return None, None, None
    path = Path(checkpoint) / PRM_CONFIG_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    return (
        fmt or StepFormat(**saved.get("format", {})),
        good_token or saved.get("good_token"),
        bad_token or saved.get("bad_token"),
    )


def step_reader(
    tokenizer: PreTrainedTokenizerBase,
    prm_format: str,
    fmt: StepFormat | None = None,
    good_token: str | None = None,
    bad_token: str | None = None,
) -> StepReader:
    """The adapter of a format for a checkpoint's tokenizer. `fmt` and the candidate tokens
    are our own format's settings (Math-Shepherd's defaults); the public formats fix theirs.
    Raises ValueError naming what the tokenizer lacks."""
    if prm_format == "inferscale":
        fmt = fmt or StepFormat()
        candidates = candidate_token_ids(
            tokenizer, good_token or GOOD_TOKEN, bad_token or BAD_TOKEN
        )
        return StepReader(prm_format, tokenizer, partial(inferscale_layout, fmt), candidates)
    if prm_format == "math_shepherd":
        return StepReader(
            prm_format, tokenizer, math_shepherd_layout, math_shepherd_candidates(tokenizer)
        )
    if prm_format not in ("qwen_prm", "rlhflow"):
        raise ValueError(f"unknown PRM format {prm_format!r}; pick one of {', '.join(PRM_FORMATS)}")
    if not tokenizer.chat_template:
        raise ValueError("its tokenizer has no chat template")
    if prm_format == "qwen_prm":
        separator = _single_token(tokenizer, QWEN_STEP_SEPARATOR)
        return StepReader(
            prm_format, tokenizer, partial(qwen_layout, tokenizer), QWEN_OUTPUTS, separator
        )
    candidates = candidate_token_ids(tokenizer, RLHFLOW_GOOD, RLHFLOW_BAD)
    return StepReader(
        prm_format,
        tokenizer,
        partial(rlhflow_layout, tokenizer),
        candidates,
        marker=candidates[0],
        read_before=True,
        add_special_tokens=False,  # the chat template writes the BOS
    )


def math_shepherd_candidates(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """The ids of `+` and `-` as Math-Shepherd's code takes them, `encode("+ -")` without its
    BOS: two word-start pieces with a sentencepiece tokenizer."""
    text = f"{GOOD_TOKEN} {BAD_TOKEN}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 2 or tokenizer.unk_token_id in ids or ids[0] == ids[1]:
        raise ValueError(
            f"its tokenizer encodes {text!r} to {tokenizer.convert_ids_to_tokens(ids)}, not to "
            "the two candidate tokens"
        )
    return ids[0], ids[1]


def _single_token(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(
            f"its tokenizer has no {text} token (it encodes to "
            f"{tokenizer.convert_ids_to_tokens(ids)})"
        )
    return ids[0]


# --- checking a checkpoint against a format ----------------------------------------------------

FIX = {
    "inferscale": "a PRM trained by inferscale (its directory holds prm.json)",
    "math_shepherd": "a Math-Shepherd PRM (e.g. peiyi9979/math-shepherd-mistral-7b-prm)",
    "qwen_prm": "a Qwen2.5-Math-PRM (e.g. Qwen/Qwen2.5-Math-PRM-7B)",
    "rlhflow": "an RLHFlow PRM (e.g. RLHFlow/Llama3.1-8B-PRM-Deepseek-Data)",
}


def check_prm_format(
    checkpoint: str | Path,
    prm_format: str,
    revision: str | None = None,
    *,
    fmt: StepFormat | None = None,
    good_token: str | None = None,
    bad_token: str | None = None,
) -> str | None:
    """Why `checkpoint` cannot be read as a PRM of `prm_format`, in one line naming the fix;
    None when it can. Reads the config, the tokenizer and the weights' names, never the
    weights. A hub id that is not on this machine (offline) cannot be checked here and passes;
    opening the scorer checks it again. `fmt` and the candidate tokens: as in `our_settings`."""
    from transformers import AutoConfig, AutoTokenizer

    if prm_format not in PRM_FORMATS:
        return f"prm.format {prm_format!r} is unknown: pick one of {', '.join(PRM_FORMATS)}"
    path = Path(checkpoint).expanduser()
    # A hub id is `name` or `owner/name`; anything else is a path on this machine.
    local = path.exists() or path.is_absolute() or str(checkpoint).startswith((".", "~"))
    # A hub id is read from the Hugging Face cache alone: a check never waits on the network.
    offline = {"revision": revision, "local_files_only": not local}
    try:
        config = AutoConfig.from_pretrained(str(checkpoint), **offline)
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), **offline)
    except (OSError, ValueError) as error:
        if not local:
            return None
        reason = str(error).strip().splitlines()[0]
        return (
            f"prm.checkpoint {str(checkpoint)!r} cannot be read as a Hugging Face model "
            f"({reason}); give a directory with config.json, the tokenizer and the weights"
        )
    settings = our_settings(checkpoint, prm_format, fmt, good_token, bad_token)
    problem = _format_problem(checkpoint, prm_format, revision, config, tokenizer, settings)
    if problem is None:
        return None
    return (
        f"prm.format {prm_format} does not fit prm.checkpoint {str(checkpoint)!r}: {problem}; "
        f"use {FIX[prm_format]}, or the prm.format the checkpoint was made for"
    )


def _format_problem(checkpoint, prm_format, revision, config, tokenizer, settings) -> str | None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    architectures = config.architectures or []
    if prm_format == "qwen_prm":
        if config.model_type != "qwen2":
            return f"its backbone is {config.model_type}, not qwen2"
        names = weight_names(checkpoint, revision)
        if names is None and Path(checkpoint).is_dir():
            return "it has no safetensors weights to take the reward head from"
        lacking = [n for n in HEAD_WEIGHTS if names is not None and n not in names]
        if lacking:
            return f"its weights have no reward head ({', '.join(lacking)})"
    elif QWEN_PRM_ARCHITECTURE in architectures or type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        shown = ", ".join(architectures) or config.model_type
        return f"it is not a causal language model ({shown})"
    try:
        reader = step_reader(tokenizer, prm_format, *settings)
        reader.encode([("1 + 2", ["1 + 2 = 3", "The answer is: 3"])])
    except (ValueError, TypeError) as error:
        return str(error).splitlines()[0].rstrip(".")
    return None


def weight_names(checkpoint: str | Path, revision: str | None = None) -> set[str] | None:
    """Names of a checkpoint's safetensors weights from their headers (no weights read); None
    where they cannot be listed here (no safetensors, or a hub id whose index is not in the
    Hugging Face cache)."""
    path = Path(checkpoint)
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            return set(json.loads(index.read_text())["weight_map"])
        files = sorted(path.glob("*.safetensors"))
        if not files:
            return None
        from safetensors import safe_open

        names: set[str] = set()
        for file in files:
            with safe_open(file, framework="pt") as weights:
                names.update(weights.keys())
        return names
    from huggingface_hub import try_to_load_from_cache

    try:
        index = try_to_load_from_cache(str(checkpoint), "model.safetensors.index.json", revision)
    except ValueError:  # an id the hub library refuses is in no cache
        return None
    if not isinstance(index, str):  # not in the cache: nothing to check here
        return None
    return set(json.loads(Path(index).read_text())["weight_map"])
