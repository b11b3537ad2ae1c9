"""Each stage's code from the import graph: an edit re-keys exactly the stages that import the
edited module (and those downstream of them), and a comment, docstring or layout edit none."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from pipeline_config import DEFAULT_INPUTS, downstream

from inferscale import stage_code as code
from inferscale.config import load_config
from inferscale.stages import plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EVERY = set(DEFAULT_INPUTS)


def keys(root: Path = code.PACKAGE_ROOT) -> dict[str, str]:
    return {a.name: a.key for a in plan(load_config(CONFIGS / "default.yaml"), root).all()}


@pytest.fixture(scope="module")
def real_keys():
    return keys()


def package_copy(tmp_path: Path) -> Path:
    root = tmp_path / "inferscale"
    shutil.copytree(code.PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_copy_of_the_package_keys_every_stage_alike(tmp_path, real_keys):
    assert keys(package_copy(tmp_path)) == real_keys


@pytest.mark.parametrize(
    ("edited", "direct"),
    [
        # The config imports what it validates against: every stage runs it.
        ("config.py", EVERY),
        ("data/synthetic.py", EVERY),
        ("grading_worker.py", EVERY),  # run as a script by grading, which the adapters import
        ("data/prepare.py", EVERY),
        ("models/sft.py", {"sft/S", "sft/L", "train_prm/prm"}),  # the PRM trains with its args
        ("models/launch.py", {"sft/S", "sft/L", "train_prm/prm"}),
        ("models/prm_train.py", {"train_prm/prm"}),
        # Step labels no longer retrain the policies, and do not depend on evaluation.py.
        ("data/step_labels.py", {"label_steps/S", "train_prm/prm"}),
        ("seeds.py", {"label_steps/S", "evaluate/S", "evaluate/L", "analyze/report"}),
        ("generation/hf.py", {"label_steps/S", "train_prm/prm", "evaluate/S", "evaluate/L"}),
        ("evaluation.py", {"evaluate/S", "evaluate/L", "analyze/report"}),
        ("tasks/evaluate.py", {"evaluate/S", "evaluate/L"}),  # search_settings is there
        ("search/rebase.py", {"evaluate/S", "evaluate/L", "analyze/report"}),
        ("models/prm_scorer.py", {"train_prm/prm", "evaluate/S", "evaluate/L"}),
        ("tracking/analysis_run.py", {"analyze/report"}),
        ("report/html.py", {"analyze/report"}),
        ("tasks/analyze.py", {"analyze/report"}),
        ("cli.py", set()),
        ("flows/pipeline.py", set()),
        ("locks.py", set()),
        ("tasks/context.py", set()),
        ("tracking/wandb_runs.py", set()),
        ("stages.py", set()),
    ],
)
def test_a_code_edit_rekeys_exactly_the_stages_that_import_it(tmp_path, real_keys, edited, direct):
    root = package_copy(tmp_path)
    path = root / edited
    path.write_text(path.read_text() + "\n_EDITED = 1\n")
    after = keys(root)
    changed = {name for name in real_keys if after[name] != real_keys[name]}
    assert changed == downstream(direct, DEFAULT_INPUTS)


def test_edits_to_comments_docstrings_and_layout_rekey_nothing(tmp_path, real_keys):
    root = package_copy(tmp_path)
    for edited in ("evaluation.py", "models/sft.py", "data/step_labels.py", "config.py"):
        path = root / edited
        source = path.read_text()
        tree = ast.parse(source)
        docstring = ast.get_docstring(tree, clean=False)
        assert docstring and docstring in source, edited
        source = source.replace(docstring, docstring + "\n\nMore words.", 1)
        source = "# a new comment\n\n\n" + source.replace("\n\n\n", "\n\n\n\n", 3)
        function = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
        inner = ast.get_docstring(function, clean=False)
        if inner and inner in source:
            source = source.replace(inner, "Reworded.", 1)
        assert source != path.read_text()
        path.write_text(source)
    assert keys(root) == real_keys


def test_a_docstring_turned_into_code_is_a_code_change(tmp_path, real_keys):
    root = package_copy(tmp_path)
    path = root / "evaluation.py"
    path.write_text(path.read_text() + '\n"not a docstring but an expression"\n')
    assert keys(root)["evaluate/S"] != real_keys["evaluate/S"]


def test_imports_are_resolved_relative_function_level_and_not_type_only(tmp_path):
    root = tmp_path / "inferscale"
    (root / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/b.py", "c.py", "d.py", "typed.py"):
        (root / name).write_text("X = 1\n")
    (root / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "from ..c import X\n"
        "if TYPE_CHECKING:\n"
        "    from inferscale import typed\n"
        "def f():\n"
        "    import inferscale.d\n"
    )
    assert code.reachable(("inferscale.sub.a",), root) == {
        "inferscale",
        "inferscale.sub",
        "inferscale.sub.a",
        "inferscale.sub.b",
        "inferscale.c",
        "inferscale.d",
    }


def test_the_orchestration_only_modules_hide_no_code_a_stage_runs():
    """A module left out of keys must not be the way to code that computes results: whatever
    it imports from the package is left out too, or is in the code of every stage that
    reaches it anyway."""
    edges, _ = code._graph(code.PACKAGE_ROOT)
    left_out = code.ORCHESTRATION_ONLY
    assert left_out <= set(edges)
    assert len(left_out) <= 10  # a short list, each entry argued for in stage_code.py
    for stage, entry_points in code.ENTRY_POINTS.items():
        hashed = code.reachable(entry_points + code.SHARED)
        reached: set[str] = set()
        todo = [m for h in hashed for m in edges[h] if m in left_out]
        while todo:
            module = todo.pop()
            if module not in reached:
                reached.add(module)
                todo.extend(m for m in edges[module] if m in left_out)
        assert "inferscale.tasks.context" in reached  # every task runs in the run context
        for module in reached:
            assert edges[module] - left_out - hashed == set(), (stage, module)


def test_the_code_of_each_stage_is_named_by_file(real_keys):
    evaluate = code.stage_code("evaluate")
    assert "inferscale/evaluation.py" in evaluate
    assert "inferscale/tasks/evaluate.py" in evaluate
    assert "inferscale/locks.py" not in evaluate
    assert all(len(h) == 16 for h in evaluate.values())
    assert "inferscale/models/sft.py" in code.stage_code("sft")
    assert "inferscale/data/step_labels.py" not in code.stage_code("sft")
