"""The step format, the synthetic arithmetic task, its word-level tokenizer and prepare_data."""

import operator
import signal
from contextlib import contextmanager

import pytest
from transformers import AutoTokenizer

from inferscale.config import ArithmeticData, DataConfig
from inferscale.data.prepare import TEST_FILE, TOKENIZER_DIR, TRAIN_FILE, prepare_data
from inferscale.data.records import read_problems
from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import make_split, make_splits
from inferscale.models.tokenizer import build_tokenizer, save_tokenizer

ANSWER = "The answer is:"
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
FORMATS = [
    StepFormat(),
    StepFormat(tag=" <step>", answer_phrase="So the result is", prompt_template="Q: {question}\n"),
]


@contextmanager
def deadline(seconds: float):
    """Turn a hang into a failure: raise TimeoutError if the block runs past `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- step format


def test_solution_writes_numbered_tagged_lines():
    fmt = StepFormat()
    assert fmt.solution(["1 + 2 = 3", "The answer is: 3"]) == (
        "Step 1: 1 + 2 = 3 ки\nStep 2: The answer is: 3 ки\n"
    )


def test_prompt_fills_the_template():
    fmt = StepFormat(prompt_template="<<{question}>>\n")
    assert fmt.prompt("3 + 4") == "<<3 + 4>>\n"


@pytest.mark.parametrize("fmt", FORMATS, ids=["default", "custom"])
@pytest.mark.parametrize(
    "steps",
    [
        ["7"],
        ["3 * 4 = 12", "12 - 5 = 7", "ANSWER 7"],
        ["x is 10: so y = 2", "Step is a word here", "ANSWER 2"],
    ],
)
def test_split_steps_inverts_solution(fmt, steps):
    steps = [s.replace("ANSWER", fmt.answer_phrase) for s in steps]
    assert fmt.split_steps(fmt.solution(steps)) == steps


@pytest.mark.parametrize("fmt", FORMATS, ids=["default", "custom"])
def test_split_steps_keeps_a_trailing_step_without_its_tag(fmt):
    partial = fmt.solution(["1 + 2 = 3", "3 * 3 = 9"]) + "Step 3: 9 - 4"
    assert fmt.split_steps(partial) == ["1 + 2 = 3", "3 * 3 = 9", "9 - 4"]


def test_split_steps_drops_a_trailing_bare_step_prefix():
    fmt = StepFormat()
    assert fmt.split_steps(fmt.solution(["1 + 2 = 3"]) + "Step 2: ") == ["1 + 2 = 3"]


def test_split_steps_of_empty_text_is_empty():
    assert StepFormat().split_steps("") == []


@pytest.mark.parametrize("fmt", FORMATS, ids=["default", "custom"])
def test_is_final_only_for_the_answer_step(fmt):
    steps = ["1 + 2 = 3", f"{fmt.answer_phrase} 3"]
    assert [fmt.is_final(s) for s in steps] == [False, True]
    assert fmt.is_final(fmt.solution(steps))
    assert not fmt.is_final(fmt.solution(steps[:1]))
    assert fmt.answer_text("3") == steps[1]


# ---------------------------------------------------------------- synthetic task


def recompute(question: str, modulus: int) -> tuple[int, list[str]]:
    """The answer and the expected step texts of a question, computed independently."""
    tokens = question.split(" ")
    value = int(tokens[0])
    assert 0 <= value < modulus
    steps = []
    for op, operand in zip(tokens[1::2], tokens[2::2], strict=True):
        assert op in OPS and 1 <= int(operand) <= 9
        result = OPS[op](value, int(operand)) % modulus
        steps.append(f"{value} {op} {operand} = {result}")
        value = result
    return value, steps


@pytest.mark.parametrize(("modulus", "levels"), [(40, [1, 2, 3, 4, 5]), (7, [3, 12]), (1000, [2])])
def test_every_answer_and_step_of_a_split_is_right(modulus, levels):
    problems = make_split("train", 300, levels, modulus, seed=5, answer_phrase=ANSWER)
    assert len(problems) == 300
    for p in problems:
        answer, steps = recompute(p.question, modulus)
        assert p.answer == str(answer), p
        assert p.steps == [*steps, f"{ANSWER} {answer}"], p
        assert p.level == len(steps)
        assert p.source == "arithmetic"
        assert p.meta == {"modulus": modulus}


def test_step_count_is_level_plus_one_and_last_step_states_the_answer():
    fmt = StepFormat()
    for p in make_split("test", 100, [1, 2, 3, 4, 5], 40, seed=0, answer_phrase=ANSWER):
        assert len(p.steps) == p.level + 1
        assert p.steps[-1] == fmt.answer_text(p.answer)
        assert [fmt.is_final(s) for s in p.steps] == [False] * p.level + [True]


def test_split_is_deterministic_by_seed():
    first = make_split("train", 200, [1, 2, 3], 40, seed=3, answer_phrase=ANSWER)
    second = make_split("train", 200, [1, 2, 3], 40, seed=3, answer_phrase=ANSWER)
    assert first == second


def test_different_seeds_give_different_problems():
    first = make_split("train", 50, [2, 3], 40, seed=0, answer_phrase=ANSWER)
    second = make_split("train", 50, [2, 3], 40, seed=1, answer_phrase=ANSWER)
    assert [p.question for p in first] != [p.question for p in second]


def test_different_split_names_give_different_problems():
    train = make_split("train", 50, [2, 3], 40, seed=0, answer_phrase=ANSWER)
    test = make_split("test", 50, [2, 3], 40, seed=0, answer_phrase=ANSWER)
    assert [p.question for p in train] != [p.question for p in test]


def test_levels_cycle_in_the_given_order_and_ids_are_numbered():
    levels = [4, 1, 2]
    problems = make_split("dev", 10, levels, 40, seed=0, answer_phrase=ANSWER)
    assert [p.level for p in problems] == [4, 1, 2, 4, 1, 2, 4, 1, 2, 4]
    assert [p.id for p in problems] == [f"dev-{i}" for i in range(10)]


def test_make_splits_gives_disjoint_deterministic_splits_with_cycling_levels():
    levels = [1, 2, 3]
    train, test = make_splits(300, 60, levels, 40, seed=2, answer_phrase=ANSWER)
    assert test == make_split("test", 60, levels, 40, seed=2, answer_phrase=ANSWER, distinct=True)
    assert len(train) == 300 and len(test) == 60
    assert {p.question for p in train}.isdisjoint(p.question for p in test)
    assert len({p.question for p in test}) == 60
    assert [p.level for p in test] == [levels[i % 3] for i in range(60)]
    assert [p.id for p in test] == [f"test-{i}" for i in range(60)]
    for p in test:
        assert p.answer == str(recompute(p.question, 40)[0])
    assert (train, test) == make_splits(300, 60, levels, 40, seed=2, answer_phrase=ANSWER)


# The default's 4000 level-1 training problems repeat questions of a 1080-question space; the
# test split must still get its 40 distinct unseen ones, quickly.
def test_make_splits_finishes_for_the_default_config():
    a = ArithmeticData()
    with deadline(2):
        train, test = make_splits(a.train_size, a.test_size, a.levels, a.modulus, 0, ANSWER)
    assert len(train) == a.train_size
    assert len(test) == a.test_size
    assert {p.question for p in train}.isdisjoint(p.question for p in test)


# Modulus 2, level 1 has only 2 * 3 * 9 = 54 distinct questions: refused, not a hang.
def test_make_splits_refuses_a_test_split_that_cannot_be_filled():
    with deadline(2), pytest.raises(ValueError):
        make_splits(20, 60, [1], 2, seed=0, answer_phrase=ANSWER)


# ---------------------------------------------------------------- prepare_data and tokenizer

DATA = DataConfig(
    arithmetic=ArithmeticData(modulus=40, levels=[1, 2, 3, 4, 5], train_size=500, test_size=50)
)
SEED = 7
MAX_NUMBER = 40  # max(modulus, 10, max(levels) + 2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    stats = prepare_data(DATA, SEED, out)
    return out, stats


@pytest.fixture(scope="module")
def tokenizer(prepared):
    out, _ = prepared
    return AutoTokenizer.from_pretrained(out / TOKENIZER_DIR)


@pytest.fixture(scope="module")
def texts(prepared):
    """Prompt + solution of every test problem and of the first train problems."""
    out, _ = prepared
    fmt = StepFormat()
    problems = read_problems(out / TEST_FILE) + read_problems(out / TRAIN_FILE)[:50]
    return [fmt.prompt(p.question) + fmt.solution(p.steps) for p in problems]


def test_prepare_data_writes_splits_tokenizer_and_stats(prepared):
    out, stats = prepared
    assert stats == {
        "train_problems": 500,
        "test_problems": 50,
        "test_levels": {str(level): 10 for level in range(1, 6)},
    }
    train, test = make_splits(500, 50, [1, 2, 3, 4, 5], 40, SEED, ANSWER)
    assert read_problems(out / TRAIN_FILE) == train
    assert read_problems(out / TEST_FILE) == test
    assert (out / TOKENIZER_DIR / "tokenizer.json").is_file()
    assert not list(out.glob("*.tmp"))


def test_tokenizer_decodes_prompts_and_solutions_losslessly(tokenizer, texts):
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
        with_bos = tokenizer(text).input_ids
        assert tokenizer.decode(with_bos, skip_special_tokens=True) == text


@pytest.mark.parametrize("space", ["", " "], ids=["bare", "leading-space"])
def test_every_number_below_max_number_is_one_token(tokenizer, space):
    ids = []
    for i in range(MAX_NUMBER):
        encoded = tokenizer(f"{space}{i}", add_special_tokens=False).input_ids
        assert len(encoded) == 1, (i, encoded)
        ids += encoded
    assert tokenizer.unk_token_id not in ids
    assert len(set(ids)) == MAX_NUMBER


def test_bare_and_spaced_numbers_are_different_tokens(tokenizer):
    assert tokenizer.convert_tokens_to_ids(["7", " 7"]) == [
        tokenizer("7", add_special_tokens=False).input_ids[0],
        tokenizer(" 7", add_special_tokens=False).input_ids[0],
    ]
    assert tokenizer.convert_tokens_to_ids("7") != tokenizer.convert_tokens_to_ids(" 7")


def test_prompts_start_with_one_bos(tokenizer):
    ids = tokenizer(StepFormat().prompt("12 + 3")).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert ids[1:] == tokenizer(StepFormat().prompt("12 + 3"), add_special_tokens=False).input_ids


def test_level_5_problem_is_under_80_tokens(prepared, tokenizer):
    out, _ = prepared
    fmt = StepFormat()
    level5 = [p for p in read_problems(out / TEST_FILE) if p.level == 5]
    assert level5
    for p in level5:
        n = len(tokenizer(fmt.prompt(p.question) + fmt.solution(p.steps)).input_ids)
        assert n < 80, (p.question, n)


def test_tokenizer_save_load_round_trip_gives_identical_ids(prepared, texts, tmp_path):
    out, _ = prepared
    fmt = StepFormat()
    train = read_problems(out / TRAIN_FILE)
    corpus = [fmt.prompt(p.question) + fmt.solution(p.steps) for p in train]
    built = build_tokenizer(corpus, MAX_NUMBER)
    loaded = AutoTokenizer.from_pretrained(save_tokenizer(built, tmp_path / "tok"))
    assert loaded.get_vocab() == built.get_vocab()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(loaded, name) == getattr(built, name), name
    for text in texts:
        assert loaded(text).input_ids == built(text).input_ids
        assert built(text).input_ids[0] == built.bos_token_id
        ids = loaded(text, add_special_tokens=False).input_ids
        assert ids == built(text, add_special_tokens=False).input_ids
        assert loaded.decode(ids) == built.decode(ids) == text


def test_swap_rate_reorders_commutative_steps_without_changing_questions():
    plain = make_split("train", 60, [3], 20, seed=5, answer_phrase=ANSWER)
    swapped = make_split("train", 60, [3], 20, seed=5, answer_phrase=ANSWER, swap_rate=1.0)
    assert [p.question for p in plain] == [p.question for p in swapped]
    assert [p.answer for p in plain] == [p.answer for p in swapped]
    changed = 0
    for a, b in zip(plain, swapped):
        for step_a, step_b in zip(a.steps, b.steps):
            left, op, right, _, result = step_a.split() if "=" in step_a else [None] * 5
            if op in ("+", "*"):
                assert step_b == f"{right} {op} {left} = {result}"
                changed += 1
            else:
                assert step_b == step_a
    assert changed > 60


def parse_step(step: str) -> tuple[int, str, int, int]:
    left, op, right, equals, result = step.split()
    assert equals == "="
    return int(left), op, int(right), int(result)


# Any order: every solution takes each operation of its question exactly once, in some order,
# with right arithmetic from the start value, and reaches the left-to-right answer.
@pytest.mark.parametrize("operations", [("+", "-"), ("+",), ("*",)])
def test_any_order_solutions_apply_each_operation_once_and_agree(operations):
    modulus = 37
    problems = make_split(
        "train",
        300,
        [1, 2, 3, 4, 5],
        modulus,
        seed=4,
        answer_phrase=ANSWER,
        operations=operations,
        any_order=True,
    )
    reordered = 0
    for p in problems:
        answer, in_order = recompute(p.question, modulus)
        assert p.answer == str(answer)
        assert p.steps[-1] == f"{ANSWER} {answer}"
        tokens = p.question.split()
        assert set(tokens[1::2]) <= set(operations)
        value = int(tokens[0])
        taken = []
        for step in p.steps[:-1]:
            left, op, right, result = parse_step(step)
            assert left == value
            assert result == OPS[op](value, right) % modulus
            taken.append((op, str(right)))
            value = result
        assert value == answer
        asked = list(zip(tokens[1::2], tokens[2::2], strict=True))
        assert sorted(taken) == sorted(asked)
        reordered += p.steps[:-1] != in_order
    # Level >= 2 questions with distinct operations are reordered about (1 - 1/level!) of the time.
    assert reordered > 100


def test_any_order_keeps_the_questions_of_the_ordered_task():
    kwargs = dict(answer_phrase=ANSWER, operations=("+", "-"))
    ordered = make_split("train", 100, [2, 3, 4], 37, seed=1, **kwargs)
    shuffled = make_split("train", 100, [2, 3, 4], 37, seed=1, any_order=True, **kwargs)
    assert [p.question for p in ordered] == [p.question for p in shuffled]
    assert [p.answer for p in ordered] == [p.answer for p in shuffled]


def test_any_order_refuses_operations_that_do_not_commute():
    with pytest.raises(ValueError, match="do not commute"):
        make_split("train", 5, [2], 37, seed=0, answer_phrase=ANSWER, any_order=True)


def test_operations_limit_the_question_space():
    # Modulus 2, level 1, '+' only: 2 * 9 = 18 questions, too few for 20 distinct test ones.
    with deadline(2), pytest.raises(ValueError, match="18 distinct questions"):
        make_splits(50, 20, [1], 2, seed=0, answer_phrase=ANSWER, operations=("+",))
