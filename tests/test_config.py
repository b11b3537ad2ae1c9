"""Experiment config validation: shipped configs load, and what validation computes (lengths,
paths, several problems in one line). The bad inputs themselves: tests/test_bad_inputs.py."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from inferscale.config import (
    ArithmeticData,
    ConfigError,
    ExperimentConfig,
    load_config,
    parse_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_RAW = yaml.safe_load((CONFIGS / "default.yaml").read_text())


def raw_config(**sections) -> dict:
    """The default config as a mapping, with top-level sections replaced or updated."""
    raw = copy.deepcopy(DEFAULT_RAW)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return raw


def config_error(raw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="exp.yaml", base_dir=CONFIGS)
    return info.value


def error_lines(error: ConfigError) -> list[str]:
    """The problems of a ConfigError as `field: message`, after checking that its one line
    starts with the source and lists them all."""
    message = str(error)
    assert "\n" not in message
    problems = [f"{field}: {msg}" for field, msg in error.problems]
    assert message == "exp.yaml: " + "; ".join(problems)
    return problems


def test_default_config_validates_with_its_values():
    config = load_config(CONFIGS / "default.yaml")
    assert isinstance(config, ExperimentConfig)
    assert config.name == "default"
    assert [p.name for p in config.policies] == ["S", "L"]
    raw = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    assert config.data.arithmetic.modulus == raw["data"]["arithmetic"]["modulus"]
    assert config.evaluation.budgets == raw["evaluation"]["budgets"]
    assert config.evaluation.pool_size == raw["evaluation"]["budgets"][-1]
    assert config.sft.deepspeed == str((CONFIGS / "deepspeed" / "zero2.json").resolve())


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, (0.6, 0.0)),  # the default: solutions as the evaluation samples, greedy rollouts
        ({"rollout_temperature": None}, (0.6, 0.6)),
        ({"temperature": 0.9, "rollout_temperature": None}, (0.9, 0.9)),
        ({"temperature": 0.9, "rollout_temperature": 0.3}, (0.9, 0.3)),
    ],
)
def test_label_temperatures_resolve_solutions_from_generation_and_rollouts_from_solutions(
    labels, expected
):
    raw = raw_config()
    assert raw["generation"]["temperature"] == 0.6
    raw["prm"]["labels"].update(labels)
    config = parse_config(raw, base_dir=CONFIGS)
    assert config.label_temperatures == expected


def test_greedy_evaluation_with_explicit_label_temperature_is_accepted():
    raw = raw_config(generation={"temperature": 0.0})
    raw["prm"]["labels"]["temperature"] = 0.8
    assert parse_config(raw, base_dir=CONFIGS).label_temperatures == (0.8, 0.0)


def test_llemma_config_validates_with_hub_policies_and_datasets():
    config = load_config(CONFIGS / "llemma.yaml")
    assert config.data.arithmetic is None
    assert config.data.train.source == "metamathqa"
    assert [ref.source for ref in config.data.eval] == ["math500", "gsm8k"]
    assert [p.hub_id for p in config.policies] == ["EleutherAI/llemma_7b", "EleutherAI/llemma_34b"]
    assert config.evaluation.pool_size == 256
    assert config.evaluation.flops.paper_params == "nominal"
    assert [p.nominal_params for p in config.policies] == [7e9, 34e9]
    assert config.sft.deepspeed == str((CONFIGS / "deepspeed" / "zero3_offload.json").resolve())


def test_parse_config_with_default_raw_validates():
    config = parse_config(raw_config(), base_dir=CONFIGS)
    assert config == load_config(CONFIGS / "default.yaml")


def test_nominal_sizes_are_accepted_and_keep_the_training_keys():
    from inferscale.stages import plan

    base = parse_config(raw_config(), base_dir=CONFIGS)
    raw = raw_config(evaluation={"flops": {"paper_params": "nominal"}})
    for policy, size in zip(raw["policies"], (0.5e6, 2.5e6)):
        policy["nominal_params"] = size
    nominal = parse_config(raw, base_dir=CONFIGS)
    assert [p.nominal_params for p in nominal.policies] == [0.5e6, 2.5e6]
    before, after = plan(base), plan(nominal)
    # A nominal size names the model in paper FLOPs: training is the same, evaluation is not.
    assert before.sft == after.sft and before.train_prm == after.train_prm
    assert before.evaluate["S"].key != after.evaluate["S"].key


def test_operations_that_commute_may_come_in_any_order():
    for operations in (["+", "-"], ["-"], ["*"]):
        data = ArithmeticData(operations=operations, any_order=True)
        assert data.any_order and data.operations == operations


@pytest.mark.parametrize(("hidden_size", "num_heads"), [(64, 2), (256, 4), (1024, 8)])
def test_policy_head_dim_in_supported_set_is_accepted(hidden_size, num_heads):
    raw = raw_config(
        policies=[
            {"name": "p", "hidden_size": hidden_size, "num_layers": 2, "num_heads": num_heads}
        ],
        prm={"labels": {"policy": "p"}, "init_from": "p"},
    )
    config = parse_config(raw, base_dir=CONFIGS)
    assert config.policies[0].hidden_size // config.policies[0].num_heads in (32, 64, 128)


def test_several_errors_are_all_listed():
    raw = raw_config(
        sft={"max_steps": -1, "learning_rate": "fast"},
        generation={"top_p": 2},
        evaluation={"budgets": [1, 3], "strategies": ["beam"]},
        colour="blue",
    )
    raw["policies"][0]["hub_id"] = "a/b"
    fields = [line.split(":")[0] for line in error_lines(config_error(raw))]
    assert sorted(fields) == sorted(
        [
            "sft.max_steps",
            "sft.learning_rate",
            "generation.top_p",
            "evaluation.budgets",
            "evaluation.strategies",
            "policies.0",
            "colour",
        ]
    )


def test_load_config_errors_are_one_line_naming_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    raw = raw_config(sft={"max_steps": 0, "deepspeed": str(CONFIGS / "deepspeed/zero2.json")})
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: sft.max_steps: Input should be greater than 0 (got 0)"


def test_yaml_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 (PyYAML) reads `1e-3` as a string, which strict validation would then refuse.
    path = tmp_path / "exp.yaml"
    text = (
        (CONFIGS / "default.yaml")
        .read_text()
        .replace("learning_rate: 1.5e-3", "learning_rate: 1e-3")
    )
    path.write_text(text.replace("deepspeed/zero2.json", str(CONFIGS / "deepspeed/zero2.json")))
    assert load_config(path).sft.learning_rate == 1e-3


def test_sft_max_length_holding_the_prompt_and_one_solution_token_is_accepted():
    config = parse_config(raw_config(), base_dir=CONFIGS)
    shortest = config.task_lengths.prompt + 1
    raw = raw_config(sft={"max_length": shortest}, generation={"max_new_tokens": 1})
    assert parse_config(raw, base_dir=CONFIGS).sft.max_length == shortest
    raw["sft"]["max_length"] = shortest - 1
    assert [f for f, _ in config_error(raw).problems] == ["sft.max_length"]


def test_task_lengths_are_those_of_the_task_tokenizer():
    from inferscale.data.prepare import load_splits
    from inferscale.models.tokenizer import build_tokenizer

    raw = raw_config(data={"arithmetic": {**DEFAULT_RAW["data"]["arithmetic"], "train_size": 2000}})
    raw["data"]["format"] = {"prompt_template": "Solve:{question}=?\n", "tag": " <t>"}
    config = parse_config(raw, base_dir=CONFIGS)
    fmt = config.data.format.step_format()
    train, _ = load_splits(config.data, 0)
    tokenizer = build_tokenizer([fmt.prompt(p.question) + fmt.solution(p.steps) for p in train], 40)

    def count(text, special=True):
        return len(tokenizer(text, add_special_tokens=special)["input_ids"])

    prompts = [count(fmt.prompt(p.question)) for p in train]
    examples = [n + count(fmt.solution(p.steps), False) + 1 for n, p in zip(prompts, train)]
    assert config.task_lengths.prompt == max(prompts)
    assert config.task_lengths.example == max(examples)


def test_hub_policy_context_is_read_from_a_local_model_folder(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    raw = raw_config(
        policies=[{"name": "p", "hub_id": str(model)}], generation={"max_new_tokens": 64}
    )
    raw["data"] = {
        "train": {"source": "gsm8k", "path": "openai/gsm8k"},
        "eval": [{"source": "gsm8k", "path": "openai/gsm8k"}],
    }
    raw["prm"]["init_from"] = str(model)
    raw["prm"]["labels"].update(policy=None, completer=None)
    assert config_error(raw).problems == [
        (
            "generation.max_new_tokens",
            "64 new tokens after a prompt of up to 1 tokens overflow policy p's context of 64 "
            "tokens (its max_position_embeddings); set it to at most 63",
        )
    ]
    raw["generation"]["max_new_tokens"] = 63
    assert parse_config(raw, base_dir=CONFIGS).generation.max_new_tokens == 63


def test_relative_deepspeed_path_resolves_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "experiments"
    (folder / "ds").mkdir(parents=True)
    (folder / "ds" / "zero.json").write_text("{}")
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(raw_config(sft={"deepspeed": "ds/zero.json"})))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert config.sft.deepspeed == str((folder / "ds" / "zero.json").resolve())


def test_relative_deepspeed_path_is_not_resolved_against_the_working_directory(
    tmp_path, monkeypatch
):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "zero.json").write_text("{}")  # beside the cwd, not the config
    folder = tmp_path / "experiments"
    folder.mkdir()
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(raw_config(sft={"deepspeed": "ds/zero.json"})))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"sft.deepspeed: {folder / 'ds' / 'zero.json'} does not exist" in str(info.value)


def test_absolute_deepspeed_path_is_kept(tmp_path):
    ds = tmp_path / "zero.json"
    ds.write_text("{}")
    config = parse_config(raw_config(sft={"deepspeed": str(ds)}), base_dir=CONFIGS)
    assert config.sft.deepspeed == str(ds.resolve())


def test_the_evaluate_only_configs_validate_and_train_nothing():
    from inferscale.models.example_checkpoints import HELDOUT_FILE, POLICY_DIR, PRM_DIRS

    for name in ("evaluate_only", "public_prm"):
        config = load_config(CONFIGS / f"{name}.yaml")
        assert not any(p.trained for p in config.policies) and config.prm.given
    # The example names the folders `make checkpoints` makes.
    local = load_config(CONFIGS / "evaluate_only.yaml")
    assert local.policies[0].checkpoint == f"runs/checkpoints/{POLICY_DIR}"
    assert local.prm.checkpoint == f"runs/checkpoints/{PRM_DIRS[local.prm.format]}"
    assert local.prm.heldout.path == f"runs/checkpoints/{HELDOUT_FILE}"
    public = load_config(CONFIGS / "public_prm.yaml")
    assert public.prm.format == "math_shepherd" and public.data.train is None
    assert public.data.format.chat_template == "tokenizer"


def test_the_readme_exact_labels_command_line_relabels_the_defaults_solutions():
    """The README's `--set` for exact labels: the same solutions (policy, questions, samples,
    temperature), no completer, and the default's data and policies reused by their keys."""
    from inferscale.stages import plan

    labels = (
        "prm.labels={kind: exact, policy: S, questions: 1600, heldout_questions: 100, "
        "samples_per_question: 4}"
    )
    assert labels in " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    default = load_config(CONFIGS / "default.yaml")
    exact = load_config(CONFIGS / "default.yaml", overrides=[labels])
    assert exact.prm.labels.kind == "exact" and exact.completer_policy.name == "S"
    same = ("policy", "questions", "heldout_questions", "samples_per_question", "temperature")
    assert {f: getattr(exact.prm.labels, f) for f in same} == {
        f: getattr(default.prm.labels, f) for f in same
    }
    before, after = plan(default), plan(exact)
    assert after.prepare_data.key == before.prepare_data.key
    assert {n: a.key for n, a in after.sft.items()} == {n: a.key for n, a in before.sft.items()}
    assert after.label_steps.key != before.label_steps.key
    assert "rollouts_per_step" not in after.label_steps.material["settings"]["prm"]["labels"]
