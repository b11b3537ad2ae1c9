"""A policy's prompts (data/prompting.py): plain and chat formats, few-shot examples, the BOS a
chat template writes, and the templates that cannot give prompts. The tokenizers are built here,
in the two shapes the public chat models have: ChatML (Qwen: no BOS) and Llama-3 (the template
writes the BOS, and encoding adds it too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_config import tiny_config
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from inferscale.config import StepFormatConfig, load_config, parse_config
from inferscale.data.prepare import TOKENIZER_DIR, TRAIN_FILE, prepare_data
from inferscale.data.prompting import PromptingError, policy_format
from inferscale.data.records import read_problems
from inferscale.models.sft import IGNORE_INDEX, training_examples
from inferscale.stages import plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Llama-3's own shape: the BOS written by the template, each content trimmed.
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
CHAT_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
EXAMPLE = {"question": "What is 1 + 1?", "solution": ["1 + 1 = 2", "The answer is: 2"]}
QUESTION = "What is {x} + 3 when x = 4?"  # braces: the prompt template must keep them single
SYSTEM = "Reason step by step."


def tokenizer(template: str | None, *, bos: str | None, adds_bos: bool) -> PreTrainedTokenizerFast:
    """A character-level tokenizer (ASCII and the tag's letters) with a chat's special tokens."""
    specials = ["<unk>", "<pad>", "</s>", *([bos] if bos else []), *CHAT_TOKENS]
    chars = [chr(c) for c in range(32, 127)] + ["\n", "к", "и"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
        )
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        bos_token=bos,
        additional_special_tokens=CHAT_TOKENS,
    )
    out.chat_template = template
    return out


def settings(**format) -> StepFormatConfig:
    return StepFormatConfig(**format)


# --- the plain format ------------------------------------------------------------------------


def test_the_default_format_prompts_as_before():
    fmt = policy_format(settings())
    assert fmt == settings().step_format()
    assert fmt.prompt(QUESTION) == f"Question: {QUESTION}\nAnswer:\n"


def test_plain_few_shot_examples_come_before_the_prompt():
    fmt = policy_format(settings(few_shot=[EXAMPLE, EXAMPLE | {"question": "Is {} empty?"}]))
    example = (
        "Question: What is 1 + 1?\nAnswer:\nStep 1: 1 + 1 = 2 ки\nStep 2: The answer is: 2 ки\n\n"
    )
    assert fmt.prompt(QUESTION) == (
        example
        + example.replace("What is 1 + 1?", "Is {} empty?")
        + f"Question: {QUESTION}\nAnswer:\n"
    )
    # The solution's format is the format's own: only the prompt changes.
    assert (fmt.tag, fmt.answer_phrase) == (" ки", "The answer is:")


# --- chat templates --------------------------------------------------------------------------


def test_chatml_prompt_with_system_prompt_and_few_shot_turns():
    tok = tokenizer(CHATML, bos=None, adds_bos=False)
    fmt = policy_format(
        settings(chat_template="tokenizer", system_prompt=SYSTEM, few_shot=[EXAMPLE]), tok
    )
    assert fmt.prompt(QUESTION) == (
        "<|im_start|>system\nReason step by step.<|im_end|>\n"
        "<|im_start|>user\nQuestion: What is 1 + 1?\nAnswer:\n<|im_end|>\n"
        "<|im_start|>assistant\nStep 1: 1 + 1 = 2 ки\nStep 2: The answer is: 2 ки\n<|im_end|>\n"
        f"<|im_start|>user\nQuestion: {QUESTION}\nAnswer:\n<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert fmt.prompt(QUESTION) == tok.apply_chat_template(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Question: What is 1 + 1?\nAnswer:\n"},
            {"role": "assistant", "content": "Step 1: 1 + 1 = 2 ки\nStep 2: The answer is: 2 ки\n"},
            {"role": "user", "content": f"Question: {QUESTION}\nAnswer:\n"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )


def test_a_template_given_in_the_config_renders_as_the_tokenizers_own():
    own = tokenizer(CHATML, bos=None, adds_bos=False)
    without = tokenizer(None, bos=None, adds_bos=False)
    given = policy_format(settings(chat_template=CHATML, prompt_template="{question}"), without)
    assert given.prompt(QUESTION) == (
        policy_format(settings(chat_template="tokenizer", prompt_template="{question}"), own)
    ).prompt(QUESTION)
    assert given.prompt(QUESTION) == (
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_llama3_bos_written_by_the_template_is_read_once():
    tok = tokenizer(LLAMA3, bos="<|begin_of_text|>", adds_bos=True)
    fmt = policy_format(settings(chat_template="tokenizer", system_prompt=SYSTEM), tok)
    prompt = fmt.prompt(QUESTION)
    assert prompt == (
        "<|start_header_id|>system<|end_header_id|>\n\nReason step by step.<|eot_id|>"
        # trimmed by the template: the prompt template's last line break is gone
        f"<|start_header_id|>user<|end_header_id|>\n\nQuestion: {QUESTION}\nAnswer:<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = tok(prompt)["input_ids"]  # as the backends encode: special tokens added
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids) == "<|begin_of_text|>" + prompt


def test_a_bos_the_tokenizer_does_not_add_stays_in_the_text():
    tok = tokenizer(LLAMA3, bos="<|begin_of_text|>", adds_bos=False)
    prompt = policy_format(settings(chat_template="tokenizer"), tok).prompt(QUESTION)
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>user")
    assert tok(prompt)["input_ids"].count(tok.bos_token_id) == 1


def test_chat_few_shot_with_the_llama3_template():
    tok = tokenizer(LLAMA3, bos="<|begin_of_text|>", adds_bos=True)
    fmt = policy_format(settings(chat_template="tokenizer", few_shot=[EXAMPLE]), tok)
    assert fmt.prompt("Q?") == (
        "<|start_header_id|>user<|end_header_id|>\n\nQuestion: What is 1 + 1?\nAnswer:<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        "Step 1: 1 + 1 = 2 ки\nStep 2: The answer is: 2 ки<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQuestion: Q?\nAnswer:<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


# --- refusals --------------------------------------------------------------------------------


def test_tokenizer_template_asked_of_a_tokenizer_without_one():
    tok = tokenizer(None, bos=None, adds_bos=False)
    with pytest.raises(PromptingError, match=r"^data\.format\.chat_template: 'tokenizer' asks"):
        policy_format(settings(chat_template="tokenizer"), tok)
    with pytest.raises(PromptingError, match="leave chat_template out"):
        policy_format(settings(chat_template="tokenizer"))


@pytest.mark.parametrize(
    "content",
    [
        "message['content'] | upper",  # recases
        "message['content'] | tojson",  # escapes quotes and line breaks
        "message['content'] | e",  # escapes HTML
        "message['content'] | replace('\\n', ' ')",
        "'(the question)'",  # drops it
    ],
)
def test_a_template_that_changes_the_question_is_refused(content):
    template = CHATML.replace("message['content']", content)
    tok = tokenizer(template, bos=None, adds_bos=False)
    with pytest.raises(PromptingError, match="changes the question's text") as err:
        policy_format(settings(chat_template="tokenizer"), tok)
    assert err.value.field == "chat_template"


def test_a_template_that_raises_on_the_prompt_is_refused():
    template = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + CHATML
    )
    tok = tokenizer(template, bos=None, adds_bos=False)
    assert policy_format(settings(chat_template="tokenizer"), tok).prompt("Q")
    with pytest.raises(PromptingError, match="System role not supported"):
        policy_format(settings(chat_template="tokenizer", system_prompt=SYSTEM), tok)


# --- keys ------------------------------------------------------------------------------------

# What stage keys held of the format before a policy's prompting could be set.
EVALUATIONS = ("evaluate/S", "evaluate/L")
PLAIN_KEY = {
    "tag": " ки",
    "answer_phrase": "The answer is:",
    "prompt_template": "Question: {question}\nAnswer:\n",
}


def test_a_format_without_prompting_settings_keys_as_before():
    assert settings().key_settings() == PLAIN_KEY
    explicit = settings(chat_template=None, system_prompt=None, few_shot=[])
    assert explicit.key_settings() == PLAIN_KEY
    assert settings(chat_template="tokenizer").key_settings() == PLAIN_KEY | {
        "chat_template": "tokenizer"
    }


def test_the_default_experiments_stages_hold_the_format_as_before():
    config = load_config(CONFIGS / "default.yaml")
    formats = {
        a.name: a.material["settings"].get("data", {}).get("format") for a in plan(config).all()
    }
    held = {name for name, f in formats.items() if f is not None}
    assert held == {"prepare_data/data", "label_steps/S", "train_prm/prm", *EVALUATIONS}
    assert all(formats[name] == PLAIN_KEY for name in held)


# --- SFT trains on the policy's prompts -------------------------------------------------------

TURNS = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "


def test_sft_examples_start_with_the_policys_prompt(tmp_path):
    raw = tiny_config(tmp_path)
    raw["data"]["format"] = {
        "chat_template": TURNS,
        "system_prompt": "Add and subtract.",
        "few_shot": [{"question": "3 + 4", "solution": ["3 + 4 = 7", "The answer is: 7"]}],
    }
    raw["sft"]["max_length"] = 256
    config = parse_config(raw, base_dir=CONFIGS)
    prepare_data(config.data, 0, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path / TOKENIZER_DIR)
    spec = {
        "format": config.data.format.model_dump(),  # as the SFT task hands it over
        "train_file": str(tmp_path / TRAIN_FILE),
        "max_length": 256,
    }
    examples = training_examples(spec, tok)
    problem = read_problems(tmp_path / TRAIN_FILE)[0]
    prompt = policy_format(config.data.format, tok).prompt(problem.question)
    assert prompt.startswith(
        "[system] Add and subtract.\n[user] Question: 3 + 4\nAnswer:\n\n"
        "[assistant] Step 1: 3 + 4 = 7 ки\nStep 2: The answer is: 7 ки\n\n"
    )
    assert prompt.endswith(f"[user] Question: {problem.question}\nAnswer:\n\n[assistant] ")
    prompt_ids = tok(prompt)["input_ids"]
    assert examples[0]["input_ids"][: len(prompt_ids)] == prompt_ids
    assert examples[0]["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)


@pytest.mark.parametrize(
    "content",
    [
        "message['content'][0]['text']",  # written for contents as lists of parts
        "(message['content'] + 1)",  # Python's own TypeError, not a template error
    ],
)
def test_a_template_that_fails_on_the_messages_is_refused(content):
    tok = tokenizer(CHATML.replace("message['content']", content), bos=None, adds_bos=False)
    with pytest.raises(PromptingError, match="fails on the prompts"):
        policy_format(settings(chat_template="tokenizer"), tok)


def test_a_template_that_writes_todays_date_gets_a_fixed_one():
    # Llama 3.2's shape: the date, when the caller gives none, from strftime_now.
    dated = (
        "{% if not date_string is defined %}{% set date_string = strftime_now('%d %b %Y') %}"
        "{% endif %}Today Date: {{ date_string }}\n" + CHATML
    )
    tok = tokenizer(dated, bos=None, adds_bos=False)
    prompt = policy_format(settings(chat_template="tokenizer"), tok).prompt("Q")
    assert prompt.startswith("Today Date: 26 Jul 2024\n<|im_start|>user\nQuestion: Q\n")
