from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from inferscale.data.adapters import ADAPTERS, LabelledSolution, load_problems, load_step_labels
from inferscale.data.steps import StepFormat

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
FMT = StepFormat()


def _load(source: str, name: str, split: str = "test", **kwargs):
    return load_problems(source, str(FIXTURES / name), split, **kwargs)


def test_math_from_csv():
    problems = _load("math", "math.csv")
    assert [p.id for p in problems] == [f"math-test-{i}" for i in range(4)]
    p = problems[0]
    assert p.question.startswith(r"What is the value of $\dfrac{1}{1+\frac{1}{2}}")
    assert p.answer == r"\frac{17}{12}"
    assert p.level == 3
    assert p.source == "math"
    assert p.meta == {"subject": "Algebra"}
    assert p.steps == [
        (
            r"Simplify each denominator first: $1+\frac{1}{2}=\frac{3}{2}$ and "
            r"$1+\frac{1}{3}=\frac{4}{3}$."
        ),
        (
            r"Taking reciprocals, the sum is $\frac{2}{3}+\frac{3}{4}=\frac{8}{12}+\frac{9}{12}="
            r"\boxed{\frac{17}{12}}$. The answer is: \frac{17}{12}"
        ),
    ]


def test_math_nested_boxed_display_math_and_figures():
    circle, triangle = _load("math", "math.csv")[1:3]
    assert circle.answer == r"\left( \frac{1}{2}, \frac{\sqrt{3}}{2} \right)"
    assert circle.level == 5
    # The display math continues its sentence instead of becoming a step of its own.
    assert len(circle.steps) == 2
    assert circle.steps[1].startswith(r"Here \[\cos \frac{\pi}{3} = \frac{1}{2}")
    assert triangle.level is None  # upstream "Level ?"
    assert triangle.answer == "5"
    assert len(triangle.steps) == 3
    assert triangle.steps[0].startswith("[asy] pair A,B,C;")
    assert triangle.steps[0].endswith("[/asy]")


def test_math500_uses_upstream_ids_and_answers():
    problems = _load("math500", "math500.jsonl")
    assert [p.id for p in problems] == [
        "test/algebra/1512.json",
        "test/number_theory/1032.json",
        "test/precalculus/1187.json",
    ]
    p = problems[2]
    assert p.question.startswith(r"Convert the point $(-2, 2\sqrt{3})$")
    assert p.answer == r"\left( 4, \frac{2 \pi}{3} \right)"
    assert p.level == 2
    assert p.source == "math500"
    assert p.meta == {"subject": "Precalculus"}
    assert p.steps == [
        r"We have $r = \sqrt{(-2)^2 + (2\sqrt{3})^2} = 4.$",
        (
            r"The point lies in the second quadrant and $\tan \theta = -\sqrt{3}$, so "
            r"$\theta = \frac{2 \pi}{3}.$"
        ),
        (
            r"Hence, the polar coordinates are $\boxed{\left( 4, \frac{2 \pi}{3} \right)}.$ "
            r"The answer is: \left( 4, \frac{2 \pi}{3} \right)"
        ),
    ]
    # A LaTeX environment is never split, even across its line breaks.
    assert len(problems[1].steps) == 1


def test_gsm8k_from_parquet_strips_calculator_annotations():
    problems = _load("gsm8k", "gsm8k.parquet")
    assert [p.answer for p in problems] == ["72", "49", "30"]
    p = problems[1]
    assert p.id == "gsm8k-test-1"
    assert p.question.startswith("Tom buys 3 shirts at $12 each")
    assert p.level is None
    assert p.source == "gsm8k"
    assert p.steps == [
        "The shirts cost 3*12 = $36.",
        "The shirts and the hat cost 36+15 = $51.",
        "His change is 100-51 = $49. The answer is: 49",
    ]
    assert all("<<" not in s and "####" not in s for q in problems for s in q.steps)


def test_metamathqa_from_json_array():
    problems = _load("metamathqa", "metamathqa.json", split="train")
    assert [p.id for p in problems] == [f"metamathqa-train-{i}" for i in range(4)]
    gsm, sv, math, _ = problems
    assert gsm.question.startswith("If a shop sells pencils for $0.25 each")
    assert gsm.answer == "6"
    assert gsm.steps == [
        "The pencils cost 12 * $0.25 = $3",
        "The sketchbook costs $3",
        "So Maya spends $3 + $3 = $6 in total. The answer is: 6",
    ]
    assert gsm.meta["type"] == "GSM_Rephrased"
    assert gsm.meta["original_question"].startswith("A shop sells pencils")
    assert len(sv.steps) == 8
    assert math.answer == r"\frac{2}{3}"
    assert len(math.steps) == 2
    assert math.steps[-1].endswith(r"$\boxed{\frac{2}{3}}$. The answer is: \frac{2}{3}")
    for p in problems:
        assert FMT.is_final(p.steps[-1]) and not any(FMT.is_final(s) for s in p.steps[:-1])


def test_math_shepherd_problems_keep_only_all_correct_solutions():
    problems = _load("math_shepherd", "math_shepherd.jsonl", split="train")
    assert [p.id for p in problems] == ["math_shepherd-train-0", "math_shepherd-train-2"]
    p = problems[1]
    assert p.question == (
        r"What is the value of $\frac{3}{4} \div \frac{9}{8}$? Express your answer as a common "
        r"fraction."
    )
    assert p.answer == r"\frac{2}{3}"
    assert p.level is None
    assert p.meta == {"task": "MATH"}
    assert p.steps == [
        r"Dividing by $\frac{9}{8}$ is the same as multiplying by $\frac{8}{9}$.",
        (
            r"So the expression equals $\frac{3}{4} \cdot \frac{8}{9} = \frac{24}{36} = "
            r"\frac{2}{3}$. The answer is: \frac{2}{3}"
        ),
    ]


def test_math_shepherd_step_labels():
    solutions = load_step_labels(str(FIXTURES / "math_shepherd.jsonl"))
    assert [s.labels for s in solutions] == [
        [True, True],
        [True, True, False],
        [True, True],
        [True, False],
    ]
    assert all(len(s.steps) == len(s.labels) for s in solutions)
    assert solutions[1] == LabelledSolution(
        question="Tom buys 3 shirts at $12 each and a hat for $15. He pays with a $100 bill. "
        "How much change does he get?",
        steps=[
            "The shirts cost 3 * 12 = $36.",
            "Together with the hat he spends 36 + 15 = $51.",
            "His change is 100 - 51 = $59. The answer is: 59",
        ],
        labels=[True, True, False],
    )
    # A first step without its `Step 1:` prefix starts after the question's `?`.
    assert solutions[3].question == "What is the remainder when $7^{2024}$ is divided by $5$?"
    assert solutions[3].steps[0] == "The powers of $7$ modulo $5$ repeat every $4$ terms."


def test_math_shepherd_tag_inside_question_is_dropped(tmp_path):
    row = {
        "input": "Parker has 4 apples ки and buys 3 more. How many now? Step 1: 4 + 3 = 7. "
        "The answer is: 7 ки",
        "label": "Parker has 4 apples + and buys 3 more. How many now? Step 1: 4 + 3 = 7. "
        "The answer is: 7 -",
        "task": "GSM8K",
    }
    path = tmp_path / "shepherd.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n")
    [solution] = load_step_labels(str(path))
    assert solution.question == "Parker has 4 apples and buys 3 more. How many now?"
    assert solution.steps == ["4 + 3 = 7. The answer is: 7"]
    assert solution.labels == [False]


def test_limit():
    assert [p.id for p in _load("gsm8k", "gsm8k.parquet", limit=2)] == [
        "gsm8k-test-0",
        "gsm8k-test-1",
    ]
    assert len(_load("math_shepherd", "math_shepherd.jsonl", "train", limit=1)) == 1
    assert len(load_step_labels(str(FIXTURES / "math_shepherd.jsonl"), limit=3)) == 3
    assert _load("math", "math.csv", limit=0) == []


def test_hub_ids_go_to_load_dataset_with_default_subset(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([{"question": "1+1?", "answer": "1+1=2\n#### 2"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    [p] = load_problems("gsm8k", "openai/gsm8k", split="test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert (p.id, p.answer) == ("gsm8k-test-0", "2")
    load_problems("gsm8k", "openai/gsm8k", split="train", subset="socratic")
    assert calls[-1] == ("openai/gsm8k", "socratic", "train")


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown source 'aime'") as err:
        load_problems("aime", str(FIXTURES / "math.csv"))
    for name in ADAPTERS:
        assert name in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.jsonl"
    with pytest.raises(ValueError, match="no such file") as err:
        load_problems("gsm8k", str(path))
    assert str(path) in str(err.value)


def test_missing_column(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "solution": "2"}) + "\n")
    with pytest.raises(ValueError, match="gsm8k") as err:
        load_problems("gsm8k", str(path))
    message = str(err.value)
    assert "'answer'" in message
    assert "question" in message and "solution" in message
