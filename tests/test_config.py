"""Experiment config validation: shipped configs load, bad ones are refused naming the field."""

import copy
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


def config_error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="exp.yaml", base_dir=CONFIGS)
    return str(info.value)


def error_lines(message: str) -> list[str]:
    """The per-problem lines of a ConfigError message (the header names the source)."""
    header, *lines = message.splitlines()
    assert header == "invalid experiment config exp.yaml:"
    return [line.strip() for line in lines]


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


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (raw_config(learning_rate=1e-3), "learning_rate"),
        (raw_config(sft={"learning_rat": 1e-3}), "sft.learning_rat"),
        (raw_config(data={"arithmetic": {"modulus": 40, "level": [1]}}), "data.arithmetic.level"),
        (raw_config(evaluation={"flops": {"params": "total"}}), "evaluation.flops.params"),
    ],
    ids=["top-level", "sft", "data.arithmetic", "evaluation.flops"],
)
def test_unknown_key_is_named_by_its_dotted_path(raw, field):
    assert error_lines(config_error(raw)) == [
        f"{field}: unknown key (check its spelling and level)"
    ]


def test_unknown_key_inside_a_policy_names_the_policy_index():
    raw = raw_config()
    raw["policies"][1]["hidden"] = 256
    assert error_lines(config_error(raw)) == [
        "policies.1.hidden: unknown key (check its spelling and level)"
    ]


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        ("sft", {"learning_rate": "fast"}, "sft.learning_rate"),
        ("sft", {"max_steps": "many"}, "sft.max_steps"),
        ("sft", {"bf16": "sometimes"}, "sft.bf16"),
        ("generation", {"temperature": [1.0]}, "generation.temperature"),
        ("evaluation", {"budgets": 16}, "evaluation.budgets"),
        ("seed", "zero", "seed"),
    ],
)
def test_wrong_type_is_refused_naming_the_field(section, value, field):
    lines = error_lines(config_error(raw_config(**{section: value})))
    assert len(lines) == 1
    assert lines[0].startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("section", "value", "field", "says"),
    [
        ("sft", {"max_steps": 0}, "sft.max_steps", "greater than 0"),
        ("sft", {"max_steps": -5}, "sft.max_steps", "greater than 0"),
        ("sft", {"warmup_steps": -1}, "sft.warmup_steps", "greater than or equal to 0"),
        ("sft", {"learning_rate": 0}, "sft.learning_rate", "greater than 0"),
        ("sft", {"lr_scheduler": "step"}, "sft.lr_scheduler", "cosine"),
        ("generation", {"top_p": 0}, "generation.top_p", "greater than 0"),
        ("generation", {"top_p": 1.5}, "generation.top_p", "less than or equal to 1"),
        ("generation", {"temperature": -0.1}, "generation.temperature", "greater than or equal"),
        ("generation", {"batch_size": 0}, "generation.batch_size", "greater than 0"),
        ("evaluation", {"budgets": [1, 3, 4]}, "evaluation.budgets", "powers of two"),
        ("evaluation", {"budgets": [1, 2, 6, 8]}, "evaluation.budgets", "powers of two"),
        ("evaluation", {"budgets": [1, 4, 2]}, "evaluation.budgets", "strictly increasing"),
        ("evaluation", {"budgets": [1, 2, 2, 4]}, "evaluation.budgets", "strictly increasing"),
        ("evaluation", {"budgets": []}, "evaluation.budgets", "at least one budget"),
        ("evaluation", {"budgets": [0, 1]}, "evaluation.budgets.0", "greater than 0"),
        ("evaluation", {"strategies": ["tree_of_thought"]}, "evaluation.strategies", "tree_of"),
        ("evaluation", {"strategies": []}, "evaluation.strategies", "at least one strategy"),
        ("data", {"arithmetic": {"modulus": 1}}, "data.arithmetic.modulus", "greater than"),
        ("data", {"arithmetic": {"levels": [0, 1]}}, "data.arithmetic.levels.0", "greater than"),
        (
            "data",
            {"format": {"prompt_template": "Q:\n"}},
            "data.format.prompt_template",
            "{question}",
        ),
        (
            "evaluation",
            {"search": {"budgets": {"rebase": [8, 4]}}},
            "evaluation.search.budgets",
            "rebase: budgets must be strictly increasing",
        ),
        (
            "evaluation",
            {"search": {"beam_width": 3, "budgets": {"beam_search": [3, 4, 6]}}},
            "evaluation.search",
            "[4] are not multiples of beam_width 3",
        ),
        (
            "evaluation",
            {"strategies": ["mcts"], "search": {"budgets": {"rebase": [4]}}},
            "evaluation",
            "no budgets for ['mcts']",
        ),
        (
            "evaluation",
            {"strategies": ["greedy", "greedy"]},
            "evaluation.strategies",
            "named twice",
        ),
        ("prm", None, "(top level)", "need a PRM: add a `prm` section"),
        ("prm", {"labels": None}, "prm", "either `labels`"),
        ("prm", {"labels": {"policy": "XL"}}, "(top level)", "'XL' is not a policy"),
        (
            "prm",
            {"labels": None, "dataset": {"source": "gsm8k", "path": "x.jsonl"}, "init_from": "m"},
            "prm",
            "math_shepherd",
        ),
        ("prm", {"labels": {"rollouts_per_step": 0}}, "prm.labels.rollouts_per_step", "greater"),
        (
            "prm",
            {"labels": {"rollouts_per_step": 2, "rollout_temperature": 0.0}},
            "prm.labels",
            "set rollouts_per_step to 1",
        ),
        (
            "prm",
            {"labels": {"rollout_temperature": -0.5}},
            "prm.labels.rollout_temperature",
            "greater than or equal to 0",
        ),
        (
            "generation",
            {"temperature": 0.0},
            "(top level)",
            "give prm.labels.temperature above 0",
        ),
        ("tracking", {"mode": "sometimes"}, "tracking.mode", "offline"),
        ("name", "my experiment", "name", "pattern"),
        (
            "evaluation",
            {"search": {"budgets": {"majority_vote": [4]}}},
            "evaluation.search.budgets",
            "['majority_vote'] are not tree searches",
        ),
        (
            "evaluation",
            {"flops": {"paper_params": "nominal"}},
            "(top level)",
            "policies ['S', 'L'] give no nominal_params",
        ),
        (
            "evaluation",
            {"flops": {"paper_params": "half"}},
            "evaluation.flops.paper_params",
            "nominal",
        ),
        ("analysis", {"fit_fraction": 1.0}, "analysis.fit_fraction", "less than 1"),
        ("analysis", {"bootstrap": -1}, "analysis.bootstrap", "greater than or equal to 0"),
        ("analysis", {"flops_per_decade": 0}, "analysis.flops_per_decade", "greater than"),
    ],
)
def test_impossible_value_is_refused_naming_the_field(section, value, field, says):
    lines = error_lines(config_error(raw_config(**{section: value})))
    assert len(lines) == 1
    assert lines[0].startswith(f"{field}: ")
    assert says in lines[0]


# BUG: config.py ArithmeticData.levels accepted an empty list, which then crashed prepare_data
# (ZeroDivisionError in make_split's `levels[i % len(levels)]`); fixed with min_length=1.
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


def test_empty_levels_list_is_refused():
    lines = error_lines(config_error(raw_config(data={"arithmetic": {"levels": []}})))
    assert len(lines) == 1
    assert lines[0].startswith("data.arithmetic.levels: ")


@pytest.mark.parametrize(
    ("arithmetic", "says"),
    [
        ({"operations": ["+", "*"], "any_order": True}, "any_order needs operations that commute"),
        ({"operations": ["+", "+"]}, "lists one twice"),
        ({"operations": ["/"]}, "Input should be"),
        ({"operations": []}, "at least 1 item"),
    ],
)
def test_impossible_operations_are_refused(arithmetic, says):
    lines = error_lines(config_error(raw_config(data={"arithmetic": arithmetic})))
    assert len(lines) == 1
    assert lines[0].startswith("data.arithmetic")
    assert says in lines[0]


@pytest.mark.parametrize(
    ("vllm", "field", "says"),
    [
        ({"gpu_memory_utilization": 1.5}, "generation.vllm.gpu_memory_utilization", "less than"),
        ({"tensor_parallel_size": 0}, "generation.vllm.tensor_parallel_size", "greater than"),
        ({"prefix_caching": True}, "generation.vllm.prefix_caching", "unknown key"),
    ],
)
def test_impossible_vllm_options_are_refused(vllm, field, says):
    lines = error_lines(config_error(raw_config(generation={"backend": "vllm", "vllm": vllm})))
    assert len(lines) == 1
    assert lines[0].startswith(f"{field}: ")
    assert says in lines[0]


def test_operations_that_commute_may_come_in_any_order():
    for operations in (["+", "-"], ["-"], ["*"]):
        data = ArithmeticData(operations=operations, any_order=True)
        assert data.any_order and data.operations == operations


def test_policy_with_both_hub_id_and_size_is_refused():
    raw = raw_config()
    raw["policies"][0]["hub_id"] = "EleutherAI/llemma_7b"
    assert error_lines(config_error(raw)) == [
        "policies.0: give either `hub_id` or a size, not both"
    ]


def test_policy_with_hub_id_and_only_intermediate_size_is_refused():
    raw = raw_config(policies=[{"name": "p", "hub_id": "a/b", "intermediate_size": 64}])
    assert error_lines(config_error(raw)) == [
        "policies.0: give either `hub_id` or a size, not both"
    ]


def test_policy_with_incomplete_size_is_refused():
    raw = raw_config(policies=[{"name": "p", "hidden_size": 128, "num_layers": 2}])
    lines = error_lines(config_error(raw))
    assert len(lines) == 1
    assert lines[0].startswith("policies.0: ")
    assert "num_heads" in lines[0]


@pytest.mark.parametrize(
    ("hidden_size", "num_heads"),
    [(96, 4), (128, 8), (512, 2), (100, 3)],
    ids=["head_dim-24", "head_dim-16", "head_dim-256", "not-divisible"],
)
def test_policy_head_dim_outside_supported_set_is_refused(hidden_size, num_heads):
    raw = raw_config(
        policies=[
            {"name": "p", "hidden_size": hidden_size, "num_layers": 2, "num_heads": num_heads}
        ]
    )
    lines = error_lines(config_error(raw))
    assert len(lines) == 1
    assert lines[0].startswith("policies.0: hidden_size / num_heads")
    assert "(32, 64, 128)" in lines[0]


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


def test_duplicate_policy_names_are_refused():
    raw = raw_config()
    raw["policies"][1]["name"] = "S"
    lines = error_lines(config_error(raw))
    assert len(lines) == 1
    assert lines[0].startswith("policies: policy names must be unique")


def test_no_policies_is_refused():
    assert error_lines(config_error(raw_config(policies=[]))) == [
        "policies: name at least one policy"
    ]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"train": {"source": "gsm8k", "path": "openai/gsm8k"}},
        {"eval": [{"source": "gsm8k", "path": "openai/gsm8k"}]},
    ],
    ids=["nothing", "train-only", "eval-only"],
)
def test_data_without_a_complete_source_is_refused(data):
    raw = raw_config()
    raw["data"] = data
    lines = error_lines(config_error(raw))
    assert lines == ["data: give either `arithmetic` or both `train` and `eval` datasets"]


def test_data_with_both_arithmetic_and_datasets_is_refused():
    raw = raw_config(data={"train": {"source": "gsm8k", "path": "openai/gsm8k"}})
    lines = error_lines(config_error(raw))
    assert lines == ["data: `arithmetic` cannot be combined with `train`/`eval` datasets"]


def test_unknown_dataset_source_is_refused_naming_the_field():
    raw = raw_config(
        data={
            "train": {"source": "mmlu", "path": "x"},
            "eval": [{"source": "gsm8k", "path": "openai/gsm8k"}],
        }
    )
    del raw["data"]["arithmetic"]
    lines = error_lines(config_error(raw))
    assert len(lines) == 1
    assert lines[0].startswith("data.train.source: ")


def test_missing_top_level_required_field_is_named():
    raw = raw_config()
    del raw["name"]
    assert error_lines(config_error(raw)) == ["name: Field required"]


def test_missing_deepspeed_file_names_the_resolved_path():
    message = config_error(raw_config(sft={"deepspeed": "deepspeed/zero9.json"}))
    lines = error_lines(message)
    assert len(lines) == 1
    assert lines[0].startswith("sft.deepspeed: ")
    assert str(CONFIGS / "deepspeed" / "zero9.json") in lines[0]


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


def test_parse_config_refuses_a_non_mapping():
    with pytest.raises(ConfigError, match="expected a mapping at the top"):
        parse_config([1, 2], source="exp.yaml", base_dir=CONFIGS)


@pytest.mark.parametrize(
    "text", ["- a\n- b\n", "just a string\n", ""], ids=["list", "str", "empty"]
)
def test_load_config_refuses_a_yaml_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"invalid experiment config {path}: expected a mapping at the top")


def test_load_config_refuses_invalid_yaml_naming_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\npolicies: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path} is not valid YAML")


def test_load_config_refuses_a_missing_file_naming_it(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"no experiment config at {path}"


def test_load_config_errors_name_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    raw = raw_config(sft={"max_steps": 0, "deepspeed": str(CONFIGS / "deepspeed/zero2.json")})
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [
        f"invalid experiment config {path}:",
        "  sft.max_steps: Input should be greater than 0",
    ]


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
    assert f"sft.deepspeed: no DeepSpeed config at {folder / 'ds' / 'zero.json'}" in str(info.value)


def test_absolute_deepspeed_path_is_kept(tmp_path):
    ds = tmp_path / "zero.json"
    ds.write_text("{}")
    config = parse_config(raw_config(sft={"deepspeed": str(ds)}), base_dir=CONFIGS)
    assert config.sft.deepspeed == str(ds.resolve())
