"""The public PRM formats on tiny local checkpoints made in exactly each format: the scorer's
numbers equal a forward pass over the input that the upstream code builds, computed here by
hand; the KV cache serves every format; and a checkpoint that does not fit a format is refused
in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Model

from inferscale.data.steps import StepFormat
from inferscale.models.prm_formats import PRM_FORMATS, check_prm_format, weight_names
from inferscale.models.prm_scorer import PRMScorer
from inferscale.models.qwen_prm import load_qwen_prm
from inferscale.models.tiny_checkpoints import build_tiny_prm, task_items
from inferscale.numerics import cpu_pins

# Questions of levels 1-5 (2 to 6 steps), with a wrong last step in some, so that the
# solutions of a question differ.
ITEMS = task_items(100, seed=7)[:10]
ITEMS += [(q, [*steps[:-1], "The answer is: 3"]) for q, steps in ITEMS[:3]]


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("prms")
    return {f: build_tiny_prm(root / f, f, seed=3) for f in PRM_FORMATS}


# --- the upstream ways, by hand ----------------------------------------------------------------


def by_hand_inferscale(directory, question, steps):
    """Our format: prompt and `Step k: ... ки` lines, read at every ` ки` token."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    fmt = StepFormat()
    ids = torch.tensor([tokenizer.encode(fmt.prompt(question) + fmt.solution(steps))])
    good, bad = tokenizer.convert_tokens_to_ids([" +", " -"])
    with torch.no_grad():
        logits = model(ids).logits[:, :, [good, bad]]
    return logits.softmax(dim=-1)[:, :, 0][ids == tokenizer.convert_tokens_to_ids(" ки")]


def by_hand_math_shepherd(directory, question, steps):
    """Math-Shepherd's model card."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    candidate_tokens = tokenizer.encode("+ -")[1:]
    step_tag_id = tokenizer.encode("ки")[-1]
    output = "\n".join(f"Step {k}: {step} ки" for k, step in enumerate(steps, 1))
    input_id = torch.tensor([tokenizer.encode(f"{question} {output}")])
    with torch.no_grad():
        logits = model(input_id).logits[:, :, candidate_tokens]
    return logits.softmax(dim=-1)[:, :, 0][input_id == step_tag_id]


def by_hand_qwen_prm(directory, question, steps):
    """Qwen2.5-Math-PRM's model card, with its head applied by hand to the backbone's output."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    backbone = Qwen2Model.from_pretrained(directory, attn_implementation="eager")
    with safe_open(directory / "model.safetensors", framework="pt") as f:
        w0, b0, w2, b2 = (
            f.get_tensor(name)
            for name in ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
        )
    messages = [
        {
            "role": "system",
            "content": "Please reason step by step, and put your final answer within \\boxed{}.",
        },
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    conversation_str = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=False
    )
    input_ids = torch.tensor([tokenizer.encode(conversation_str)])
    with torch.no_grad():
        hidden = backbone(input_ids=input_ids).last_hidden_state
        logits = torch.relu(hidden @ w0.T + b0) @ w2.T + b2
    step_sep_id = tokenizer.encode("<extra_0>")[0]
    return logits.softmax(dim=-1)[input_ids == step_sep_id][:, 1]


def by_hand_rlhflow(directory, question, steps):
    """RLHFlow's official evaluation loop: one chat per step, read at position -3."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    candidate_tokens = [tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]]
    conversation, scores = [], []
    for k in range(len(steps)):
        text = question + " " + steps[0] if k == 0 else steps[k]
        conversation.append({"content": text, "role": "user"})
        conversation.append({"content": "+", "role": "assistant"})
        input_ids = tokenizer.apply_chat_template(conversation, return_tensors="pt")
        input_ids = getattr(input_ids, "input_ids", input_ids)
        with torch.no_grad():
            logits = model(input_ids).logits[:, -3, candidate_tokens]
        scores.append(logits.softmax(dim=-1)[0, 0])
    return torch.stack(scores)


BY_HAND = {
    "inferscale": by_hand_inferscale,
    "math_shepherd": by_hand_math_shepherd,
    "qwen_prm": by_hand_qwen_prm,
    "rlhflow": by_hand_rlhflow,
}


def assert_scores(
    got: list[list[float]], expected: list[torch.Tensor], rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    assert [len(g) for g in got] == [len(e) for e in expected]
    for g, e in zip(got, expected):
        torch.testing.assert_close(torch.tensor(g), e.float(), rtol=rtol, atol=atol)


# --- scores ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prm_format", PRM_FORMATS)
def test_scores_equal_the_upstream_forward_pass_batched_alone_and_from_the_cache(
    checkpoints, prm_format
):
    directory = checkpoints[prm_format]
    expected = [BY_HAND[prm_format](directory, q, steps) for q, steps in ITEMS]
    assert all(len(e) == len(steps) for e, (_, steps) in zip(expected, ITEMS))
    assert all(0 < x < 1 for e in expected for x in e)

    def scorer(**options):
        return PRMScorer.from_pretrained(directory, prm_format=prm_format, **options)

    batched = scorer(batch_size=8).score(ITEMS)
    assert_scores(batched, expected)
    alone = scorer(batch_size=1)
    one_by_one = [alone.score([item])[0] for item in ITEMS]
    assert_scores(one_by_one, expected)
    uncached = scorer(batch_size=4, cache_bytes=0).score(ITEMS)
    assert_scores(uncached, expected)
    # As for our own format (test_prm.py): bitwise with the machine's own kernels, to float32
    # rounding under the CPU numerics pins.
    for other in (one_by_one, uncached):
        if cpu_pins():
            assert_scores(other, [torch.tensor(b) for b in batched], rtol=0, atol=1e-6)
        else:
            assert other == batched
    # Partial solutions first, as a tree search asks, then the whole ones from their prefixes.
    cached = scorer(batch_size=3)
    partial = [(q, steps[:k]) for q, steps in ITEMS for k in range(1, len(steps))]
    by_item = dict(zip(map(repr, partial), cached.score(partial)))
    for (q, steps), e in zip(ITEMS, expected):
        for k in range(1, len(steps)):
            assert_scores([by_item[repr((q, steps[:k]))]], [e[:k]])
    before = cached.tokens_read
    assert_scores(cached.score(ITEMS), expected)
    read_again = cached.tokens_read - before
    assert 0 < read_again < sum(len(ids) for ids in encoded_ids(cached, ITEMS)) / 3


def encoded_ids(scorer: PRMScorer, items) -> list[list[int]]:
    return [e.ids for e in scorer.reader.encode(items)]


@pytest.mark.parametrize("prm_format", PRM_FORMATS)
def test_each_new_step_is_read_once_on_top_of_the_cached_prefix(checkpoints, prm_format):
    scorer = PRMScorer.from_pretrained(checkpoints[prm_format], prm_format=prm_format)
    question, steps = ITEMS[4]
    whole = scorer.reader.encode([(question, steps)])[0]
    assert 0 < whole.prompt < whole.reads[0]
    # The question's prompt is read once for two first steps.
    scorer.score([(question, steps[:1]), (question, ["9 + 9 = 18"])])
    first = scorer.tokens_read
    assert whole.reads[0] + 1 < first < 2 * (whole.reads[0] + 1)
    for k in range(2, len(steps) + 1):
        before = scorer.tokens_read
        scorer.score([(question, steps[:k])])
        assert scorer.tokens_read - before == whole.reads[k - 1] - whole.reads[k - 2]


# --- checkpoints that do not fit a format ------------------------------------------------------


def test_each_checkpoint_fits_its_own_format_and_the_tiny_ones_are_upstream_shaped(checkpoints):
    for prm_format, directory in checkpoints.items():
        assert check_prm_format(directory, prm_format) is None
    qwen = checkpoints["qwen_prm"]
    assert json.loads((qwen / "config.json").read_text())["architectures"] == [
        "Qwen2ForProcessRewardModel"
    ]
    names = weight_names(qwen)
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= names
    assert "model.embed_tokens.weight" in names and not any("lm_head" in n for n in names)
    llama = AutoTokenizer.from_pretrained(checkpoints["rlhflow"])
    chat = llama.apply_chat_template([{"role": "user", "content": "1 + 2"}], tokenize=False)
    assert chat.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" in chat
    shepherd = AutoTokenizer.from_pretrained(checkpoints["math_shepherd"])
    assert shepherd.convert_ids_to_tokens(shepherd.encode("+ -")) == ["<s>", "▁+", "▁-"]
    assert shepherd.chat_template is None
    # A seed fixes the weights.
    again = build_tiny_prm(qwen.parent / "again", "qwen_prm", seed=3)
    first, second = load_file(qwen / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(first[n], second[n]) for n in first)
    with pytest.raises(ValueError, match="unknown PRM format 'prm800k'"):
        build_tiny_prm(qwen.parent / "x", "prm800k")


def without_separator(qwen, tmp_path):
    """The Qwen PRM with its `<extra_0>` token renamed."""
    directory = tmp_path / "no-separator"
    shutil.copytree(qwen, directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = directory / name
        path.write_text(path.read_text().replace("<extra_0>", "<extra_9>"))
    return directory


def without_head(qwen, tmp_path):
    """The Qwen PRM with its reward head's weights left out."""
    directory = tmp_path / "no-head"
    shutil.copytree(qwen, directory)
    weights = load_file(directory / "model.safetensors")
    kept = {n: w for n, w in weights.items() if not n.startswith("score.")}
    save_file(kept, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def test_a_checkpoint_that_does_not_fit_the_format_is_refused_in_one_line(checkpoints, tmp_path):
    qwen = checkpoints["qwen_prm"]
    refused = {
        (qwen, "math_shepherd"): "it is not a causal language model (Qwen2ForProcessRewardModel)",
        (qwen, "rlhflow"): "it is not a causal language model",
        (checkpoints["rlhflow"], "qwen_prm"): "its backbone is llama, not qwen2",
        (without_separator(qwen, tmp_path), "qwen_prm"): "its tokenizer has no <extra_0> token",
        (without_head(qwen, tmp_path), "qwen_prm"): "its weights have no reward head "
        "(score.0.weight, score.0.bias, score.2.weight, score.2.bias)",
        (checkpoints["math_shepherd"], "rlhflow"): "its tokenizer has no chat template",
        (checkpoints["inferscale"], "math_shepherd"): "its tokenizer encodes '+ -' to "
        "['<unk>', ' -'], not to the two candidate tokens",
    }
    for (directory, prm_format), reason in refused.items():
        message = check_prm_format(directory, prm_format)
        assert message is not None and "\n" not in message, (prm_format, message)
        assert message.startswith(f"prm.format {prm_format} does not fit prm.checkpoint ")
        assert reason in message, message
        assert message.endswith(", or the prm.format the checkpoint was made for")
        with pytest.raises(ValueError) as refusal:
            PRMScorer.from_pretrained(directory, prm_format=prm_format)
        assert str(refusal.value) == message
    # Our own format takes its candidate tokens from the experiment or prm.json.
    shepherd = checkpoints["math_shepherd"]
    assert check_prm_format(shepherd, "inferscale") is None  # Math-Shepherd's "+"/"-"
    message = check_prm_format(shepherd, "inferscale", good_token=" +", bad_token=" -")
    assert "the PRM's good token ' +' must be one token of the tokenizer" in message
    message = check_prm_format(checkpoints["inferscale"], "prm800k")
    assert message == (
        "prm.format 'prm800k' is unknown: pick one of inferscale, math_shepherd, qwen_prm, rlhflow"
    )
    missing = check_prm_format(tmp_path / "nowhere", "qwen_prm")
    assert missing is not None and "cannot be read" in missing and "\n" not in missing
    # A hub id this machine has no copy of cannot be checked offline; opening it checks again.
    assert check_prm_format("Qwen/Qwen2.5-Math-PRM-7B", "qwen_prm") is None


def test_the_qwen_loader_never_makes_up_a_missing_head(checkpoints, tmp_path):
    with pytest.raises(ValueError, match=r"lacks weights of a Qwen2.5-Math-PRM \(score\.0\.bias"):
        load_qwen_prm(str(without_head(checkpoints["qwen_prm"], tmp_path)), None)
