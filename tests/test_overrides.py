"""`--set key.path=value`: the pure override of a config mapping, its validation like the YAML
file's, and the commands that take it (the run's flow replaced: its work is not the point)."""

from __future__ import annotations

import os
import signal
import sys
import types

import pytest
import yaml
from pipeline_config import tiny_config, write_config

from inferscale.cli import main
from inferscale.config import ConfigError, load_config, parse_config
from inferscale.overrides import OverrideError, apply_overrides, config_source, set_path
from inferscale.stages import plan


def test_a_path_addresses_nested_mappings_and_list_items():
    raw = {"a": {"b": 1}, "items": [{"x": 1}, {"x": 2}]}
    out = apply_overrides(raw, ["a.b=2", "items.1.x=[3, 4]", "a.c.d=true"], yaml.safe_load)
    assert out == {"a": {"b": 2, "c": {"d": True}}, "items": [{"x": 1}, {"x": [3, 4]}]}
    assert raw == {"a": {"b": 1}, "items": [{"x": 1}, {"x": 2}]}  # the input is left alone


def test_a_later_override_wins_and_a_null_section_is_filled():
    raw = {"prm": None, "seed": 1}
    out = apply_overrides(raw, ["seed=2", "prm.max_steps=3", "seed=4"], yaml.safe_load)
    assert out == {"prm": {"max_steps": 3}, "seed": 4}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("seed", "--set seed: expected key.path=value"),
        ("a..b=1", "--set a..b=1: expected key.path=value"),
        ("=1", "--set =1: expected key.path=value"),
        ("items.2.x=1", "items is a list; address one of its items by index (0-1), not '2'"),
        ("items.first=1", "items is a list; address one of its items by index (0-1), not 'first'"),
        ("items.-1=1", "not '-1'"),
        ("empty.0=1", "empty is a list; address one of its items by index (none: it is empty)"),
        ("seed.x=1", "seed is a number (1), not a section; set seed itself"),
        ("name.x.y=1", "name is a string ('n'), not a section; set name itself"),
    ],
)
def test_an_override_that_cannot_apply_is_refused_naming_it(text, says):
    raw = {"seed": 1, "name": "n", "items": [{}, {}], "empty": []}
    with pytest.raises(OverrideError) as err:
        apply_overrides(raw, [text], yaml.safe_load)
    assert says in str(err.value)


def test_set_path_replaces_a_whole_section():
    assert set_path({"a": {"b": 1}}, ["a"], {"c": 2}, "a={c: 2}") == {"a": {"c": 2}}


def test_config_source_quotes_what_the_shell_would_split():
    assert config_source("exp.yaml", []) == "exp.yaml"
    assert (
        config_source("exp.yaml", ["seed=3", "evaluation.budgets=[1, 2]"])
        == "exp.yaml --set seed=3 --set 'evaluation.budgets=[1, 2]'"
    )


@pytest.fixture
def experiment(tmp_path):
    return write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))


def test_overrides_are_read_as_yaml_and_validated(experiment):
    config = load_config(
        experiment,
        [
            "evaluation.budgets=[1,2]",
            "policies.1.hidden_size=128",
            "prm.learning_rate=1e-3",
            "sft.bf16=false",
            "name=other",
        ],
    )
    assert config.evaluation.budgets == [1, 2]
    assert config.policies[1].hidden_size == 128 and config.policies[0].hidden_size == 64
    assert config.prm.learning_rate == 0.001  # YAML 1.2's float, as in the file
    assert config.sft.bf16 is False and config.name == "other"


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("sft.learning_rat=1e-3", "sft.learning_rat: unknown key: did you mean learning_rate?"),
        ("policies.0.hidden=96", "policies.0.hidden: unknown key: did you mean hidden_size?"),
        ("sftt.max_steps=3", "sftt: unknown key: did you mean sft?"),
        ("sft.max_steps=true", "sft.max_steps: Input should be a valid integer"),
        ("evaluation.budgets=[1,3]", "evaluation.budgets:"),
        ("seed=-1", "seed: Input should be greater than or equal to 0 (got -1)"),
        ("policies.5.hidden_size=1", "policies is a list; address one of its items by index"),
        ("seed=[1", "the value is not valid YAML"),
    ],
)
def test_a_bad_override_is_refused_like_the_yaml(experiment, override, says):
    with pytest.raises(ConfigError) as err:
        load_config(experiment, [override])
    line = str(err.value)
    assert line.startswith(f"{experiment}") and len(line.splitlines()) == 1, line
    assert "--set " in line and override in line and says in line, line


def test_keys_follow_the_overrides(experiment):
    base, changed = plan(load_config(experiment)), plan(load_config(experiment, ["seed=5"]))
    assert base.evaluate["A"].key != changed.evaluate["A"].key
    same = plan(load_config(experiment, ["generation.batch_size=7"]))  # a speed setting
    assert [a.path for a in same.all()] == [a.path for a in base.all()]


@pytest.fixture
def cli(monkeypatch):
    """`main`, with the run's flow replaced by one that records its parameters."""
    flow = types.ModuleType("inferscale.flows.pipeline")
    calls: list[dict] = []

    def experiment_flow(**parameters):
        calls.append(parameters)
        return {"prepare_data": "somewhere"}

    flow.experiment_flow, flow.StagesFailed = experiment_flow, RuntimeError
    monkeypatch.setitem(sys.modules, "inferscale.flows.pipeline", flow)
    monkeypatch.setattr("inferscale.reaper.start_for", lambda pid: None)  # no run to watch
    monkeypatch.setattr(os, "environ", dict(os.environ))
    handler = signal.getsignal(signal.SIGTERM)
    yield main, calls
    signal.signal(signal.SIGTERM, handler)


def test_run_hands_the_overridden_config_to_the_flow(experiment, cli, capsys):
    main, calls = cli
    sets = ["--set", "evaluation.budgets=[1, 2]", "--set", "seed=5"]
    assert main(["run", str(experiment), *sets, "--only", "prepare_data"]) == 0
    [parameters] = calls
    config = parse_config(parameters["config"], source="parameters")
    assert config.evaluation.budgets == [1, 2] and config.seed == 5
    assert (
        parameters["config_path"] == f"{experiment} --set 'evaluation.budgets=[1, 2]' --set seed=5"
    )
    assert parameters["only"] == "prepare_data" and parameters["policy"] is None
    assert (
        plan(config).analyze
        == plan(load_config(experiment, ["evaluation.budgets=[1, 2]", "seed=5"])).analyze
    )
    assert "prepare_data: somewhere" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command", ["validate", "run", "status", "summary", "report", "plan", "gc"]
)
def test_every_command_refuses_a_bad_override_in_one_line(experiment, cli, command, capsys):
    main, calls = cli
    before = set(experiment.parent.rglob("*"))
    extra = ["--flops", "1e9"] if command == "plan" else []
    with pytest.raises(SystemExit) as exit:
        main([command, str(experiment), "--set", "sft.max_step=3", *extra])
    assert exit.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"{experiment} --set sft.max_step=3: sft.max_step: unknown key: did you")
    assert calls == [] and set(experiment.parent.rglob("*")) == before


def test_validate_and_status_follow_the_overrides(experiment, cli, capsys):
    main, _ = cli
    assert main(["validate", str(experiment), "--set", "evaluation.budgets=[1,2]"]) == 0
    assert "budgets [1, 2]" in capsys.readouterr().out
    assert main(["status", str(experiment), "--set", "seed=5"]) == 0
    out = capsys.readouterr().out
    changed = plan(load_config(experiment, ["seed=5"]))
    assert str(changed.evaluate["A"].path) in out
    assert str(plan(load_config(experiment)).evaluate["A"].path) not in out
