"""The PRM without DeepSpeed: where it is read, its loss, its metrics, the scorer, and that a
plain training loop with the loss learns a separable labelled set."""

from __future__ import annotations

import dataclasses
import operator
import random
from fractions import Fraction

import pytest
import torch
from prm_data import BAD_TOKEN, FMT, GOOD_TOKEN, labelled_set, save_tiny_model, tokenizer_for
from transformers import AutoModelForCausalLM

from inferscale.models.prm import (
    NOT_A_TAG,
    candidate_token_ids,
    collate_labelled,
    encode_labelled,
    encode_steps,
    step_loss,
    step_probabilities,
)
from inferscale.models.prm_metrics import (
    best_of_n_selection,
    evaluate_step_scores,
    roc_auc,
    score_heldout,
)
from inferscale.models.prm_scorer import PRMScorer
from inferscale.numerics import cpu_pins

RECORDS = labelled_set(8, seed=0)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; with two on a busy 2-core machine, OpenMP's
    spinning makes them up to 100x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for(RECORDS)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return save_tiny_model(tmp_path_factory.mktemp("prm-init"), tokenizer)


# --- where the PRM is read ---------------------------------------------------------------------


def test_the_tag_is_one_token_and_each_step_is_read_at_its_tag(tokenizer):
    tag_ids = tokenizer(FMT.tag, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(tag_ids) == [" ки"]
    record = RECORDS[1]
    ids, positions = encode_steps(tokenizer, FMT, record.question, record.steps)
    text = FMT.prompt(record.question) + FMT.solution(record.steps)
    assert ids == tokenizer(text)["input_ids"]
    assert positions == [i for i, t in enumerate(ids) if t == tag_ids[0]]  # Math-Shepherd's way
    assert len(positions) == len(record.steps) == 4
    # Each position closes its own step: the text up to it is the prompt and steps 1..k.
    for k, position in enumerate(positions, 1):
        upto = tokenizer.decode(ids[1 : position + 1])
        assert upto == FMT.prompt(record.question) + FMT.solution(record.steps[:k]).rstrip("\n")


def test_a_tag_token_inside_the_question_is_not_read(tokenizer):
    ids, positions = encode_steps(tokenizer, FMT, "1 + 2 ки", ["1 + 2 = 3", "The answer is: 3"])
    tag_id = tokenizer.convert_tokens_to_ids(" ки")
    assert sum(1 for t in ids if t == tag_id) == 3 and len(positions) == 2
    assert positions[0] > ids.index(tag_id)


def test_candidates_must_each_be_one_known_token(tokenizer):
    good, bad = candidate_token_ids(tokenizer, GOOD_TOKEN, BAD_TOKEN)
    assert tokenizer.convert_ids_to_tokens([good, bad]) == [" +", " -"]
    # Without the space, `+` is not a token of the word-level tokenizer (it encodes to <unk>).
    with pytest.raises(ValueError, match=r"good token '\+' must be one token.*' \+'"):
        candidate_token_ids(tokenizer, "+", "-")
    with pytest.raises(ValueError, match="bad token ' - 1' must be one token"):
        candidate_token_ids(tokenizer, " +", " - 1")
    with pytest.raises(ValueError, match="the same token"):
        candidate_token_ids(tokenizer, " +", " +")


def test_training_targets_sit_at_the_tags_and_padding_is_ignored(tokenizer):
    record = RECORDS[1]  # the bad solution of question 0: labels 1..1 0..0
    ids, positions = encode_steps(tokenizer, FMT, record.question, record.steps)
    example = encode_labelled(tokenizer, FMT, record, 256)
    assert example["input_ids"] == ids
    assert [i for i, t in enumerate(example["step_targets"]) if t != NOT_A_TAG] == positions
    assert [example["step_targets"][p] for p in positions] == record.soft_labels
    # Cut before the last tag: the last step's target goes, the others stay.
    cut = encode_labelled(tokenizer, FMT, record, positions[-1])
    assert sum(t != NOT_A_TAG for t in cut["step_targets"]) == len(positions) - 1
    assert encode_labelled(tokenizer, FMT, record, positions[0]) is None

    soft = dataclasses.replace(record, soft_labels=[0.25, 1.0, 0.0, 0.0])
    assert [encode_labelled(tokenizer, FMT, soft, 256)["step_targets"][p] for p in positions] == [
        0.25,
        1.0,
        0.0,
        0.0,
    ]
    hard = encode_labelled(tokenizer, FMT, soft, 256, label="hard")
    assert [hard["step_targets"][p] for p in positions] == [1.0, 1.0, 0.0, 0.0]

    batch = collate_labelled([example, cut], tokenizer.pad_token_id)
    assert batch["attention_mask"][1].sum() == len(cut["input_ids"])
    assert (batch["step_targets"][1][len(cut["input_ids"]) :] == NOT_A_TAG).all()


def test_loss_is_cross_entropy_over_the_two_candidates_with_soft_targets():
    logits = torch.zeros(1, 3, 5)
    logits[0, 1, 2], logits[0, 1, 4] = 2.0, -1.0  # good = id 2, bad = id 4
    logits[0, 2, 0] = 50.0  # another token's logit changes nothing
    targets = torch.tensor([[NOT_A_TAG, 0.25, 1.0]])
    p = torch.sigmoid(torch.tensor(3.0))
    expected = -(0.25 * p.log() + 0.75 * (1 - p).log() + 0.5 * 2 * torch.tensor(0.5).log()) / 2
    assert step_loss(logits, targets, (2, 4)) == pytest.approx(expected.item(), rel=1e-6)
    assert step_probabilities(logits, (2, 4))[0, 1] == pytest.approx(p.item(), rel=1e-6)
    no_tags = step_loss(logits.requires_grad_(), torch.full((1, 3), NOT_A_TAG), (2, 4))
    assert no_tags.item() == 0.0 and no_tags.requires_grad


# --- metrics -----------------------------------------------------------------------------------


def brute_force_auc(labels, scores) -> Fraction:
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    wins = sum(Fraction(1) if p > n else Fraction(1, 2) if p == n else 0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_matches_a_pair_count_with_ties_as_halves():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 30)
        labels = [rng.random() < 0.4 for _ in range(n)]
        scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, rng.random()]) for _ in range(n)]
        if all(labels) or not any(labels):
            assert roc_auc(labels, scores) is None
        else:
            assert roc_auc(labels, scores) == float(brute_force_auc(labels, scores))
    assert roc_auc([True, False], [0.3, 0.3]) == 0.5
    assert roc_auc([True, True, False], [0.9, 0.1, 0.5]) == 0.5
    assert roc_auc([False, True, False, True], [0.1, 0.8, 0.4, 0.35]) == 0.75
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([True, False], [float("nan"), 0.1])


def test_best_of_n_picks_the_top_score_first_on_ties_and_never_no_answer():
    ids = ["a", "a", "a", "b", "b", "c"]  # c has one solution: not a selection
    correct = [False, True, False, True, False, True]
    result = best_of_n_selection(ids, correct, [0.2, 0.9, 0.9, 0.4, 0.4, 0.0])
    assert result == {"questions": 2, "accuracy": 1.0, "random": (1 / 3 + 1 / 2) / 2, "oracle": 1.0}
    assert best_of_n_selection(ids, correct, [0.2, 0.1, 0.9, 0.1, 0.4, 0.0])["accuracy"] == 0.0
    answered = [True, False, True, True, False, True]
    no_answer_first = best_of_n_selection(ids, correct, [0.2, 0.9, 0.1, 0.3, 0.9, 0.0], answered)
    assert no_answer_first["accuracy"] == 0.5  # a: the 0.2 wrong one; b: the 0.3 right one
    assert best_of_n_selection(["a"], [True], [1.0]) == {"questions": 0}


def test_evaluate_step_scores_reads_last_and_min():
    ids = ["a", "a"]
    labels = [[True, True], [True, False]]
    scores = [[0.8, 0.6], [0.5, 0.7]]  # last prefers the wrong one, min the right one
    metrics = evaluate_step_scores(ids, labels, [True, False], scores)
    assert metrics["step_auc"] == 1 / 3
    assert (metrics["bon_last_accuracy"], metrics["bon_min_accuracy"]) == (0.0, 1.0)
    assert metrics["bon_random_accuracy"] == 0.5 and metrics["bon_oracle_accuracy"] == 1.0


# --- the scorer --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_layer_dir(tmp_path_factory, tokenizer):
    """Two layers: a difference in the first layer's attention reaches the scores through the
    second (with one layer, a last-bit change in attention mostly rounds away)."""
    return save_tiny_model(tmp_path_factory.mktemp("prm-2"), tokenizer, num_layers=2)


def all_prefixes(records):
    return [(r.question, r.steps[:k]) for r in records for k in range(1, len(r.steps) + 1)]


def scorer_for(model_dir, **options):
    return PRMScorer.from_pretrained(
        model_dir, threads=1, good_token=" +", bad_token=" -", **options
    )


def same_scores(a: list[list[float]], b: list[list[float]]) -> bool:
    """Equal up to float32 rounding. Under the CPU numerics pins MKL's reproducible branch picks
    its matmul kernels by the matrices' shapes, so a batch's company can change a score's last
    bits; with the machine's own kernels (INFERSCALE_CPU_NUMERICS=native) they are equal."""
    return [len(s) for s in a] == [len(s) for s in b] and all(
        abs(x - y) <= 1e-6 for s, t in zip(a, b) for x, y in zip(s, t)
    )


def test_scores_do_not_depend_on_batching_padding_the_cache_or_what_follows(two_layer_dir):
    # Questions and steps of several lengths, so that a batch's padding depends on its company;
    # and chunks of a few tokens (8-19), around the width at which CPU kernels change (MIN_WIDTH).
    varied = [
        (r.question + " + 1" * (i % 4), [step + " + 0" * (i % 3) for step in r.steps])
        for i, r in enumerate(RECORDS)
    ]
    items = all_prefixes(RECORDS) + [
        (q, steps[:k]) for q, steps in varied for k in range(1, len(steps) + 1)
    ]
    random.Random(1).shuffle(items)
    options = [
        {"batch_size": 1},
        {"batch_size": 3},
        {"batch_size": len(items)},
        {"batch_size": 5, "cache_bytes": 0},  # nothing kept: every prefix read again
        {"batch_size": 4, "cache_bytes": 20_000},  # a few prefixes kept, the rest dropped
    ]
    alone, *batched = [scorer_for(two_layer_dir, **o).score(items) for o in options]
    same = same_scores if cpu_pins() else operator.eq
    assert all(same(b, alone) for b in batched)
    assert [len(s) for s in alone] == [len(steps) for _, steps in items]
    assert all(0 < x < 1 for s in alone for x in s)
    # Whole solutions scored cold give the same numbers as their prefixes one by one, and a
    # second call, served from the cache, the same again.
    scorer = scorer_for(two_layer_dir, batch_size=6)
    whole = scorer.score([(r.question, r.steps) for r in RECORDS])
    assert scorer.score([(r.question, r.steps) for r in RECORDS]) == whole  # bitwise: a rerun
    by_item = {(q, tuple(steps)): s for (q, steps), s in zip(items, alone)}
    for r, scores in zip(RECORDS, whole):
        assert same([scores], [by_item[(r.question, tuple(r.steps))]])
        # A step's score does not depend on the steps after it (the model is causal).
        prefixes = [by_item[(r.question, tuple(r.steps[:k]))][-1] for k in range(1, 5)]
        assert same([scores], [prefixes])
    assert scorer.score([]) == []
    assert scorer.score([("1 + 2", [])]) == [[]]


def test_the_cache_reads_each_new_step_once_and_stays_in_its_budget(two_layer_dir, tokenizer):
    record = RECORDS[0]
    ids, tags = encode_steps(tokenizer, FMT, record.question, record.steps)
    prompt = len(tokenizer(FMT.prompt(record.question))["input_ids"])
    scorer = scorer_for(two_layer_dir)
    # A tree search: the first step of two siblings, then each of their children.
    scorer.score([(record.question, record.steps[:1]), (record.question, ["9 + 9 = 18"])])
    first = scorer.tokens_read
    assert tags[0] + 1 < first < 2 * (tags[0] + 1)  # the prompt is read once for both
    scorer.score([(record.question, record.steps[:2])])
    assert scorer.tokens_read - first == tags[1] - tags[0]  # only step 2 is read
    scorer.score([(record.question, record.steps[:2])])
    assert scorer.tokens_read - first == tags[1] - tags[0]  # nothing new to read

    cold = scorer_for(two_layer_dir, cache_bytes=0)
    cold.score([(record.question, record.steps)])
    assert cold.tokens_read == tags[-1] + 1 and cold._cached_bytes == 0
    bounded = scorer_for(two_layer_dir, cache_bytes=150_000)
    bounded.score(all_prefixes(RECORDS))
    assert 0 < bounded._cached_bytes <= 150_000
    assert prompt < tags[0]


def test_scorer_reads_what_a_forward_pass_gives_at_the_tags(two_layer_dir, tokenizer):
    scorer = scorer_for(two_layer_dir)
    model = AutoModelForCausalLM.from_pretrained(two_layer_dir, attn_implementation="eager")
    record = RECORDS[0]
    ids, positions = encode_steps(tokenizer, FMT, record.question, record.steps)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    good, bad = candidate_token_ids(tokenizer, " +", " -")
    expected = torch.softmax(logits[positions][:, [good, bad]], dim=-1)[:, 0]
    # Read chunk by chunk on top of the cache, the numbers agree to float rounding.
    got = torch.tensor(scorer.score([(record.question, record.steps)])[0])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# --- learning ----------------------------------------------------------------------------------


def test_a_plain_loop_with_the_prm_loss_learns_a_separable_set(tmp_path):
    """Good/bad depends on the text up to each tag (a `*` so far), and differs between steps of
    one solution: reading one step off (measured: AUC about 0.92-0.95) fails the bar."""
    torch.manual_seed(0)
    train, held_out = labelled_set(64, seed=1), labelled_set(16, seed=2, prefix="h")
    tokenizer = tokenizer_for(train + held_out)
    model_dir = save_tiny_model(tmp_path / "init", tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    candidates = candidate_token_ids(tokenizer, GOOD_TOKEN, BAD_TOKEN)
    examples = [encode_labelled(tokenizer, FMT, r, 64) for r in train]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    losses = []
    for _ in range(60):
        batch = collate_labelled(rng.sample(examples, 16), tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = step_loss(logits, batch["step_targets"], candidates)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.1 < losses[0]
    model.save_pretrained(tmp_path / "prm")
    tokenizer.save_pretrained(tmp_path / "prm")

    scorer = PRMScorer.from_pretrained(tmp_path / "prm", good_token=GOOD_TOKEN, bad_token=BAD_TOKEN)
    metrics = score_heldout(scorer, held_out)
    assert metrics["step_auc"] > 0.99
    assert metrics["bon_questions"] == 16 and metrics["bon_random_accuracy"] == 0.5
    assert metrics["bon_last_accuracy"] == metrics["bon_min_accuracy"] == 1.0


def test_pairs_of_records_and_items_line_up():
    # Guards the fixture the tests above rely on: one good and one bad solution per question.
    for good, bad in zip(RECORDS[::2], RECORDS[1::2]):
        assert good.question_id == bad.question_id
        assert all(good.hard_labels) and not bad.hard_labels[-1]
        assert bad.hard_labels == sorted(bad.hard_labels, reverse=True)
