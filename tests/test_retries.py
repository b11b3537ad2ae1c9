"""Retries per stage: set in the config, kept out of the stage keys, applied by Prefect to each
stage task, and never spent on a stage that another run is computing."""

from __future__ import annotations

import pytest
from pipeline_config import REPO, tiny_config, write_config

from inferscale.config import ConfigError, RetryConfig, load_config
from inferscale.locks import StageBusy
from inferscale.stages import STAGES, plan


def test_every_stage_has_a_retry_setting_with_cheap_retries_by_default():
    config = load_config(REPO / "configs" / "default.yaml")
    assert list(RetryConfig.model_fields) == list(STAGES)
    counts = {stage: getattr(config.retries, stage).count for stage in STAGES}
    assert counts == {
        "prepare_data": 2,
        "sft": 0,
        "label_steps": 0,
        "train_prm": 0,
        "measure_prm": 0,
        "evaluate": 1,
        "analyze": 0,
    }
    assert {getattr(config.retries, s).delay_seconds for s in STAGES} == {30.0}


def test_retries_change_no_stage_key(tmp_path):
    base = load_config(write_config(tmp_path / "a.yaml", tiny_config(tmp_path / "runs")))
    retried = tiny_config(tmp_path / "runs")
    retried["retries"] = {s: {"count": 3, "delay_seconds": 5.0} for s in STAGES}
    other = load_config(write_config(tmp_path / "b.yaml", retried))
    assert [a.path for a in plan(other).all()] == [a.path for a in plan(base).all()]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"sft": {"count": -1}}, "retries.sft.count: Input should be greater than or equal to 0"),
        ({"evaluate": {"count": 1, "delay": 5}}, "retries.evaluate.delay: unknown key"),
        ({"training": {"count": 1}}, "retries.training: unknown key"),
    ],
)
def test_bad_retry_settings_are_refused_in_one_line(tmp_path, section, expected):
    raw = tiny_config(tmp_path / "runs")
    raw["retries"] = section
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path / "exp.yaml", raw))
    assert "\n" not in str(info.value)
    assert expected in str(info.value)


def test_each_stage_task_gets_its_own_retry_setting(tmp_path):
    from inferscale.tasks.analyze import analyze_task
    from inferscale.tasks.evaluate import evaluate_task
    from inferscale.tasks.label_steps import label_steps_task
    from inferscale.tasks.measure_prm import measure_prm_task
    from inferscale.tasks.prepare_data import prepare_data_task
    from inferscale.tasks.retries import with_retries, worth_retrying
    from inferscale.tasks.sft import sft_task
    from inferscale.tasks.train_prm import train_prm_task

    raw = tiny_config(tmp_path / "runs")
    raw["retries"] = {s: {"count": i, "delay_seconds": 10.0 * i} for i, s in enumerate(STAGES)}
    config = load_config(write_config(tmp_path / "exp.yaml", raw))
    tasks = (
        prepare_data_task,
        sft_task,
        label_steps_task,
        train_prm_task,
        measure_prm_task,
        evaluate_task,
        analyze_task,
    )
    for i, stage_task in enumerate(tasks):
        retried = with_retries(stage_task, config)
        assert retried.name == STAGES[i]
        assert retried.retries == i
        assert retried.retry_delay_seconds == 10.0 * i
        assert retried.retry_condition_fn is worth_retrying


@pytest.mark.slow  # the harness's server takes about 20 s to start
@pytest.mark.usefixtures("prefect_harness")
def test_prefect_retries_a_failed_stage_but_not_one_another_run_holds(tmp_path):
    from prefect import flow, task

    from inferscale.tasks.retries import with_retries

    raw = tiny_config(tmp_path / "runs")
    raw["retries"] = {"evaluate": {"count": 2, "delay_seconds": 0.0}}
    config = load_config(write_config(tmp_path / "exp.yaml", raw))
    faults = {"transient": ConnectionError, "busy": StageBusy}
    attempts: list[str] = []

    @task(name="evaluate")
    def flaky(fault: str) -> str:
        attempts.append(fault)
        if len(attempts) == 1:
            raise faults[fault]("the first attempt fails")
        return "done"

    @flow
    def run_stage(fault: str) -> bool:
        return with_retries(flaky, config)(fault, return_state=True).is_completed()

    assert run_stage("transient") is True
    assert attempts == ["transient", "transient"]

    attempts.clear()
    assert run_stage("busy") is False
    assert attempts == ["busy"]
