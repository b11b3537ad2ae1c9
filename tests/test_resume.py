"""A run killed during evaluation resumes without regenerating the questions already written."""

from __future__ import annotations

import json

import pytest
from pipeline_config import kill_once_written, tiny_config, write_config

from inferscale.config import load_config
from inferscale.stages import plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

OVERRIDES = {
    "policies": [{"name": "A", "hidden_size": 64, "num_layers": 1, "num_heads": 2}],
    "data.arithmetic.test_size": 40,
    "evaluation.budgets": [1, 2, 4, 8],
    "generation.batch_size": 16,  # two questions of 8 samples per backend call
    # The pool alone: tree searches resuming per question are tested in test_evaluation_prm.
    "evaluation.strategies": ["greedy", "majority_vote"],
    "prm": None,
}


def test_killed_evaluation_resumes_where_it_stopped(tmp_path, monkeypatch):
    config_path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs", **OVERRIDES))
    p = plan(load_config(config_path))
    pool_file = p.evaluate["A"].path / "samples-n8.jsonl"
    written = kill_once_written(config_path, tmp_path, pool_file, 6)
    written_ids = {json.loads(line)["id"] for line in written}
    assert 6 <= len(written_ids) < 40
    assert p.sft["A"].complete and not p.evaluate["A"].complete

    import inferscale.tasks.evaluate as evaluate_module

    requested: list[str] = []
    real_load = evaluate_module.load_backend

    def recording_backend(generation, model_dir):
        backend = real_load(generation, model_dir)
        real_generate = backend.generate

        def generate(requests):
            requested.extend(r.prompt for r in requests)
            return real_generate(requests)

        backend.generate = generate
        return backend

    monkeypatch.setattr(evaluate_module, "load_backend", recording_backend)
    monkeypatch.setattr("inferscale.tasks.sft.run_sft", lambda *a, **k: pytest.fail("retrained"))
    from inferscale.flows.parameters import flow_parameters
    from inferscale.flows.pipeline import experiment_flow

    experiment_flow(**flow_parameters(load_config(config_path), str(config_path)))

    records = [json.loads(line) for line in pool_file.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(f"test-{i}" for i in range(40))
    questions = {r["id"]: r for r in records}
    from inferscale.data.records import read_problems

    prompts = {
        p_.id: load_config(config_path).data.format.prompt_template.format(question=p_.question)
        for p_ in read_problems(p.prepare_data.path / "test.jsonl")
    }
    assert len(requested) == 40 - len(written_ids)  # greedy was finished before the kill
    assert not {prompts[i] for i in written_ids} & set(requested)
    # The records written before the kill are kept as they were.
    assert pool_file.read_text().splitlines()[: len(written)] == written
    assert p.evaluate["A"].complete and p.analyze.complete
    assert len(questions) == 40
