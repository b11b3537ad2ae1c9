"""A policy's prompts: the step format's prompt template, optionally rendered through a chat
template with a system prompt, and few-shot examples before the question.

`policy_format` resolves the `data.format` settings for one policy's tokenizer into a plain
`StepFormat` whose `prompt(question)` is the whole prompt text, so that generation, search and
step labelling read prompts as they always have. The chat is rendered with a marker in
place of the question; the text around the marker becomes the prompt template. That is only
sound when the template inserts the question as it is, which is checked by rendering with two
markers made of characters templates tend to transform (quotes, `<`, `&`, a line break, a
backslash): a template that escapes or recases them, or drops the question, is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from inferscale.data.steps import StepFormat

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from inferscale.config import StepFormatConfig

# The setting that asks for the policy tokenizer's own chat template.
TOKENIZER_TEMPLATE = "tokenizer"
# The day a template that writes today's date (Llama 3.2's, through `strftime_now`) is given:
# Llama 3.1's own default, so that prompts do not change from one day to the next and a resumed
# evaluation asks what it asked before.
TEMPLATE_DATE = datetime(2024, 7, 26)
_MARKERS = ('<q1 "Mx" & a\\b\n{1}>', "<q2 'Zy' & c\\d\n{2}>")
FewShot = Sequence[tuple[str, Sequence[str]]]  # (question, steps) of each example


class PromptingError(ValueError):
    """A chat template that cannot give the prompts, named by its `data.format` field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"data.format.{field}: {message}")
        self.field, self.message = field, message


def policy_format(
    settings: StepFormatConfig, tokenizer: PreTrainedTokenizerBase | None = None
) -> StepFormat:
    """The step format whose `prompt(question)` is the policy's whole prompt text.

    `tokenizer` is the policy's: its chat template when `chat_template` is "tokenizer", its
    special tokens for any chat template, and its BOS. Without one, a given template is rendered
    with no special tokens (as the config's validation does).
    """
    fmt = settings.step_format()
    few_shot = [(e.question, e.solution) for e in settings.few_shot]
    if settings.chat_template is None:
        return replace(fmt, prompt_template=plain_prompt_template(fmt, few_shot))
    template = settings.chat_template
    if template == TOKENIZER_TEMPLATE:
        template = _tokenizer_template(tokenizer)
    special_tokens = dict(tokenizer.special_tokens_map) if tokenizer is not None else {}
    prompt = chat_prompt_template(template, special_tokens, fmt, settings.system_prompt, few_shot)
    if tokenizer is not None and _adds_bos(tokenizer) and prompt.startswith(tokenizer.bos_token):
        # The backends encode prompts with special tokens: a BOS kept in the text would be read
        # twice.
        prompt = prompt[len(tokenizer.bos_token) :]
    return replace(fmt, prompt_template=prompt)


def plain_prompt_template(fmt: StepFormat, few_shot: FewShot) -> str:
    """Each example's prompt and solution, a blank line after each, then the prompt template."""
    blocks = [_escape(fmt.prompt(q) + fmt.solution(list(steps)) + "\n") for q, steps in few_shot]
    return "".join(blocks) + fmt.prompt_template


def chat_prompt_template(
    template: str,
    special_tokens: dict[str, Any],
    fmt: StepFormat,
    system_prompt: str | None,
    few_shot: FewShot,
) -> str:
    """The chat's rendering as a prompt template: the system prompt, each example as a user turn
    (its prompt) and an assistant turn (its solution), the question's user turn, and the
    generation prompt. Raises `PromptingError` for a template that fails to render or does not
    insert the question as it is."""
    rendered = [
        _render(template, _messages(fmt, system_prompt, few_shot, marker), special_tokens)
        for marker in _MARKERS
    ]
    pieces = [text.split(marker) for text, marker in zip(rendered, _MARKERS, strict=True)]
    if len(pieces[0]) < 2 or pieces[0] != pieces[1]:
        raise PromptingError(
            "chat_template",
            "the chat template changes the question's text (it escapes or recases it, "
            "or drops it), so prompts cannot be made from it; give a template that "
            "inserts each message's content as it is",
        )
    return "{question}".join(_escape(piece) for piece in pieces[0])


def _messages(
    fmt: StepFormat, system_prompt: str | None, few_shot: FewShot, question: str
) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    for q, steps in few_shot:
        messages.append({"role": "user", "content": fmt.prompt(q)})
        messages.append({"role": "assistant", "content": fmt.solution(list(steps))})
    messages.append({"role": "user", "content": fmt.prompt(question)})
    return messages


def _render(template: str, messages: list[dict[str, str]], special_tokens: dict) -> str:
    """What `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`
    renders with this template and these special tokens, on `TEMPLATE_DATE`."""
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(
            conversations=[messages],
            chat_template=template,
            add_generation_prompt=True,
            **special_tokens,
            strftime_now=TEMPLATE_DATE.strftime,
        )
    except Exception as err:  # a template is code: whatever it raises, it cannot give prompts
        raise PromptingError(
            "chat_template",
            f"the chat template fails on the prompts ({' '.join(str(err).split())}); fix the "
            "template, or leave out what it refuses (a system prompt, few-shot turns)",
        ) from None
    return rendered[0]


def check_template_syntax(template: str) -> None:
    """Raise `PromptingError` when `template` does not parse as a chat template."""
    from jinja2 import TemplateSyntaxError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        _compile_jinja_template(template)
    except TemplateSyntaxError as err:
        raise PromptingError(
            "chat_template",
            f"does not parse as a Jinja chat template (line {err.lineno}: {err.message}); "
            f"fix it, or give {TOKENIZER_TEMPLATE!r} for the policy tokenizer's own",
        ) from None


def _tokenizer_template(tokenizer: PreTrainedTokenizerBase | None) -> str:
    if tokenizer is None or not tokenizer.chat_template:
        where = f" ({tokenizer.name_or_path})" if getattr(tokenizer, "name_or_path", "") else ""
        raise PromptingError(
            "chat_template",
            f"{TOKENIZER_TEMPLATE!r} asks for the policy tokenizer's chat template, and the "
            f"tokenizer{where} has none; give a Jinja template instead, or leave chat_template "
            "out for the plain prompt_template",
        )
    return tokenizer.get_chat_template()


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether encoding with special tokens, as the backends do, starts with the BOS token."""
    if tokenizer.bos_token is None or tokenizer.bos_token_id is None:
        return False
    return tokenizer("1")["input_ids"][:1] == [tokenizer.bos_token_id]


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
