"""An oracle PRM as the experiment's PRM (`prm.kind`): the README's command line, the plan
without PRM training, the scorer and the cost its evaluations get, running one stage alone, and
how the report names it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import LlamaConfig

from inferscale.cli import main
from inferscale.compute import FREE, ModelCost
from inferscale.config import load_config
from inferscale.models.oracle_prm import OracleScorer, oracle_scores
from inferscale.report.html import section_prm
from inferscale.report.summary import format_summary
from inferscale.single_stage import selection_problem
from inferscale.stages import plan
from inferscale.tasks import given_models
from inferscale.tasks.evaluate import prm_cost
from inferscale.tasks.prm_reader import open_prm

DEFAULT = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
# The README's command line, word for word after `inferscale run configs/default.yaml`.
README_SETS = ["prm.kind=noisy_oracle", "prm.labels=null", "prm.oracle.auc=0.9"]


def oracle_config(*sets: str):
    return load_config(DEFAULT, overrides=[*README_SETS, *sets])


def inputs(config, policy: str) -> list[str]:
    return sorted(plan(config).evaluate[policy].material["inputs"])


def test_the_readme_command_line_evaluates_with_a_noisy_oracle_and_trains_no_prm():
    config = oracle_config()
    assert (config.prm.kind, config.prm.oracle_settings.auc) == ("noisy_oracle", 0.9)
    assert config.prm_init_policy.name == "S"  # the default's prm.init_from
    oracle, learned = plan(config), plan(load_config(DEFAULT))
    assert oracle.label_steps is None and oracle.train_prm is None
    assert [a.stage for a in oracle.all()].count("evaluate") == 2
    # Keyed by content: in the default's folder, its data and policies are reused.
    assert oracle.root == learned.root
    assert oracle.prepare_data.key == learned.prepare_data.key
    assert {n: a.key for n, a in oracle.sft.items()} == {n: a.key for n, a in learned.sft.items()}
    assert oracle.evaluate["S"].key != learned.evaluate["S"].key


def test_the_readme_command_line_runs_dry(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["run", str(DEFAULT), *(a for s in README_SETS for a in ("--set", s)), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "evaluate/S" in out and "evaluate/L" in out
    assert "train_prm" not in out and "label_steps" not in out
    assert list(tmp_path.iterdir()) == []  # a plan writes nothing


def test_an_oracle_read_at_a_prms_cost_has_its_init_policys_model_as_input():
    priced, free = oracle_config(), oracle_config("prm.oracle.flops=zero")
    assert inputs(priced, "L") == ["prepare_data/data", "sft/L", "sft/S"]
    assert inputs(free, "L") == ["prepare_data/data", "sft/L"]
    moved = oracle_config("prm.init_from=L")
    assert inputs(moved, "S") == ["prepare_data/data", "sft/L", "sft/S"]
    settings = plan(free).evaluate["L"].material["settings"]["prm"]
    assert settings == {"kind": "noisy_oracle", "auc": 0.9, "seed": 0, "flops": "zero"}
    exact = oracle_config("prm.kind=oracle", "prm.oracle.auc=1.0")
    assert plan(exact).evaluate["L"].key != plan(priced).evaluate["L"].key


def test_open_prm_gives_the_oracle_of_the_settings_without_a_folder():
    config = oracle_config("prm.oracle.seed=3")
    scorer = open_prm(config, None)
    assert isinstance(scorer, OracleScorer)
    assert (scorer.auc, scorer.seed, scorer.modulus) == (0.9, 3, config.data.arithmetic.modulus)
    question = "3 + 4 * 2"
    steps = ["3 + 4 = 7", "7 * 2 = 14", "The answer is: 14"]
    assert scorer.score([(question, steps)]) == [
        oracle_scores(question, steps, scorer.modulus, "The answer is:", 0.9, 3)
    ]


def test_prm_cost_is_the_init_policys_model_or_free(tmp_path):
    model = LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    model.save_pretrained(tmp_path)
    priced, free = oracle_config(), oracle_config("prm.oracle.flops=zero")
    assert prm_cost(priced, str(tmp_path)) == ModelCost.from_config(model)
    assert prm_cost(priced, str(tmp_path)).non_embedding > 0
    assert prm_cost(free, None) == FREE
    assert prm_cost(load_config(DEFAULT), None) is None  # a learned PRM not given: none read
    # A trained init policy's folder is its SFT artifact, read as it is.
    assert given_models.prm_dir(priced, str(tmp_path)) == str(tmp_path)


def test_running_an_evaluation_alone_waits_for_the_init_policy_only_when_reads_cost(
    tmp_path,
):
    out = f"output_dir={tmp_path}"
    priced, free = oracle_config(out), oracle_config(out, "prm.oracle.flops=zero")
    problem = selection_problem(priced, plan(priced), "evaluate", "L", [], "exp.yaml")
    assert "evaluate-L needs prepare_data" in problem
    for config in (priced, free):
        p = plan(config)
        p.prepare_data.path.mkdir(parents=True, exist_ok=True)
        p.prepare_data.mark_complete({})
        p.sft["L"].path.mkdir(parents=True, exist_ok=True)
        p.sft["L"].mark_complete({})
    problem = selection_problem(priced, plan(priced), "evaluate", "L", [], "exp.yaml")
    assert "evaluate-L needs sft-S, which is not finished" in problem
    assert selection_problem(free, plan(free), "evaluate", "L", [], "exp.yaml") is None
    problem = selection_problem(free, plan(free), "train_prm", None, [], "exp.yaml")
    assert "no train_prm stage (its PRM is an oracle (prm.kind: noisy_oracle)" in problem


@pytest.mark.parametrize(
    ("flops", "says"),
    [("prm", "count as a PRM trained from prm.init_from"), ("zero", "count as zero")],
)
def test_the_summary_names_the_oracle_instead_of_held_out_metrics(tmp_path, flops, says):
    summary = {
        "experiment": "default",
        "policies": {},
        "prm": {"kind": "noisy_oracle", "auc": 0.9, "seed": 0, "flops": flops},
    }
    text = format_summary(summary, tmp_path)
    line = next(x for x in text.splitlines() if x.startswith("PRM"))
    assert "oracle of exact step validity (noisy_oracle, step AUC 0.9, seed 0)" in line
    assert line.endswith(says)
    assert "held-out" not in text


def test_the_reports_prm_section_names_the_oracle():
    oracle = {"kind": "oracle", "auc": 1.0, "seed": 0, "flops": "zero"}
    section = section_prm(SimpleNamespace(prm=oracle))
    assert "an oracle of exact step validity (oracle, step AUC 1, seed 0)" in section
    assert "held-out" not in section
    learned = section_prm(SimpleNamespace(prm={"step_auc": 0.8}))
    assert "held-out" in learned and "oracle" not in learned
