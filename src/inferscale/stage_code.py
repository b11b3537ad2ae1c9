"""The code behind each stage: every package module its entry points reach by imports.

A stage's key holds a hash of each module it may run, so that an edit anywhere in that code
computes the stage again, and an edit elsewhere does not. The modules are found statically, with
`ast`: module-level and function-level imports, relative ones resolved, and the few modules
started in a process of their own by name (`LAUNCHED`); imports under `if TYPE_CHECKING:` never
run and do not count. A module is hashed in a normal form (its syntax tree without docstrings;
comments are not in it), so that fixing a comment, a docstring or the layout never trains a
model again. A new Python release may write the tree differently:
then every stage is keyed anew, once.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "inferscale"
PACKAGE_ROOT = Path(__file__).resolve().parent

# Where each stage's code starts: its task module, and for trainings the module the
# `deepspeed` launcher runs in every rank.
ENTRY_POINTS = {
    "prepare_data": ("inferscale.tasks.prepare_data",),
    "sft": ("inferscale.tasks.sft", "inferscale.models.sft"),
    "label_steps": ("inferscale.tasks.label_steps",),
    "train_prm": ("inferscale.tasks.train_prm", "inferscale.models.prm_train"),
    "measure_prm": ("inferscale.tasks.measure_prm",),
    "evaluate": ("inferscale.tasks.evaluate",),
    "analyze": ("inferscale.tasks.analyze",),
    # The PRM-quality study's own stages (it also runs train_prm).
    "exact_labels": ("inferscale.tasks.exact_labels",),
    "prm_quality": ("inferscale.tasks.prm_variant",),
    "prm_quality_report": ("inferscale.tasks.prm_quality_report",),
}
# Every task reads its settings from the validated config and marks its directory complete
# through the (orchestration-only) run context: the config's code, which resolves defaults such
# as `prm_training`, and the artifacts' are in every stage.
SHARED = ("inferscale.config", "inferscale.artifacts")
# Modules that run another one as a script (not an import), so the graph has no edge for it.
LAUNCHED = {"inferscale.grading": ("inferscale.grading_worker",)}
# Modules that only orchestrate: they decide whether and when a stage runs, guard its directory,
# stop its processes or report to W&B, and never touch what the stage writes. They stay out of
# every key (and so do the modules only they import), so that, e.g., a change in locking does not
# compute every stage again. Each must import nothing from the package that a stage's result
# depends on (tests/test_stage_code.py checks it); keep the list short.
ORCHESTRATION_ONLY = frozenset(
    {
        "inferscale.locks",  # which run may work in a stage's directory
        "inferscale.tasks.context",  # reuse or clear a directory, by its key
        "inferscale.stages",  # the keys themselves, and the plan whose timings the report lists
        "inferscale.stage_code",
        "inferscale.models.processes",  # process groups of training ranks, their clean-up
        "inferscale.tracking.wandb_runs",  # W&B runs of the stages (their files are apart)
        "inferscale.tracking.offline",
        "inferscale.progress",  # terminal progress bars
        "inferscale.models.training_progress",  # the step count a rank leaves for the bar
        # where a given checkpoint's files are, and their identity, which keys its readers
        "inferscale.models.checkpoints",
    }
)


def module_path(module: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source file of a package module (a package's __init__), or None if there is none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(module: str, tree: ast.Module, root: Path) -> set[str]:
    """The package modules that `module`'s source imports, anywhere in it."""
    is_package = module_path(module, root).name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            # `from inferscale.search import tree` imports a module, not a name
            names.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            continue
        # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if module_path(prefix, root) is not None:
                found.add(prefix)
    found.discard(module)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` but those under `if TYPE_CHECKING:`, which never run."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def normal_form(tree: ast.Module) -> str:
    """The module's syntax tree without docstrings (it drops them from `tree`): the same for
    any comment, docstring or layout edit."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.cache
def _graph(root: Path) -> tuple[dict[str, frozenset[str]], dict[str, str]]:
    """Each package module's imports and the hash of its normal form, for the package at
    `root` (read once per process: plan() asks at every call)."""
    edges: dict[str, frozenset[str]] = {}
    hashes: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [PACKAGE, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        tree = ast.parse(path.read_bytes())
        edges[module] = frozenset(_imported(module, tree, root) | set(LAUNCHED.get(module, ())))
        hashes[module] = hashlib.sha256(normal_form(tree).encode()).hexdigest()[:16]
    return edges, hashes


def reachable(entry_points: tuple[str, ...], root: Path = PACKAGE_ROOT) -> frozenset[str]:
    """The package modules that the entry points run, orchestration-only ones left out."""
    edges, _ = _graph(root)
    seen: set[str] = set()
    todo = [m for m in entry_points if m not in ORCHESTRATION_ONLY]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(m for m in edges.get(module, ()) if m not in ORCHESTRATION_ONLY)
    return frozenset(seen)


def stage_code(stage: str, root: Path = PACKAGE_ROOT) -> dict[str, str]:
    """The hash of each module `stage` runs, by its file path under the package
    (`inferscale/evaluation.py`), as a stage's key holds them."""
    _, hashes = _graph(root)
    out = {}
    for module in reachable(ENTRY_POINTS[stage] + SHARED, root):
        path = module_path(module, root)
        out[f"{PACKAGE}/{path.relative_to(root).as_posix()}"] = hashes[module]
    return dict(sorted(out.items()))
