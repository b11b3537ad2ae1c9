"""The catalogue of bad inputs: each is refused before any work, in one line, with code 2.

Every case is an experiment file (and the files it names) that `inferscale validate` and
`inferscale run` must refuse: exit code 2, exactly one line on stderr that starts with the
experiment file and names the field or the file and line, nothing on stdout, and no file written
(the run's flow is never reached). README.md quotes the number of cases (`CASE_COUNT`).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from inferscale.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
UPSTREAM = REPO / "tests" / "fixtures" / "upstream"
DEFAULT_RAW = yaml.safe_load((CONFIGS / "default.yaml").read_text())
DELETE = object()

GSM8K_ROW = {"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}
SHEPHERD_ROW = json.loads((UPSTREAM / "math_shepherd.jsonl").read_text().splitlines()[0])
MATH_CSV_HEADER = "problem,level,type,solution\n"
MATH_CSV_ROW = 'What is 1+1?,Level 1,Algebra,"We add: $1+1=\\boxed{2}$."\n'


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path, pytest.MonkeyPatch], Path]  # writes the experiment file, returns it
    says: tuple[str, ...]  # what the line must name: the field or file (and line), the fix
    commands: tuple[str, ...] = ("validate", "run")


def default_raw(tmp: Path) -> dict:
    """The default experiment, writing under `tmp`, with its DeepSpeed file found anywhere."""
    raw = copy.deepcopy(DEFAULT_RAW)
    raw["output_dir"] = str(tmp / "runs")
    raw["sft"]["deepspeed"] = str(CONFIGS / "deepspeed" / "zero2.json")
    return raw


def dataset_raw(tmp: Path) -> dict:
    """An experiment on upstream dataset files with hub policies and no PRM."""
    raw = default_raw(tmp)
    raw["data"] = {
        "train": {"source": "gsm8k", "path": str(UPSTREAM / "gsm8k.parquet"), "split": "train"},
        "eval": [{"source": "math500", "path": str(UPSTREAM / "math500.jsonl")}],
    }
    raw["policies"] = [{"name": "llemma-7b", "hub_id": "EleutherAI/llemma_7b"}]
    raw["evaluation"] = {"strategies": ["greedy", "majority_vote"], "budgets": [1, 2, 4]}
    del raw["prm"]
    return raw


def apply(raw: dict, changes: dict) -> dict:
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key = int(leaf) if isinstance(node, list) else leaf
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return raw


def write(tmp: Path, raw: dict) -> Path:
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path


def edit(id: str, changes: dict, *says: str, base=default_raw, commands=("validate", "run")):
    """The default experiment (or `base`) with dotted-path changes; `{tmp}` in a string value
    is the case's folder."""

    def make(tmp: Path, mp) -> Path:
        resolved = {
            k: v.replace("{tmp}", str(tmp)) if isinstance(v, str) else v for k, v in changes.items()
        }
        return write(tmp, apply(base(tmp), resolved))

    return Case(id, make, says, commands)


def text(id: str, body: str, *says: str):
    """An experiment file with this exact text (`{deepspeed}` and `{tmp}` filled in)."""

    def make(tmp: Path, mp) -> Path:
        path = tmp / "exp.yaml"
        deepspeed = CONFIGS / "deepspeed" / "zero2.json"
        path.write_text(body.replace("{deepspeed}", str(deepspeed)).replace("{tmp}", str(tmp)))
        return path

    return Case(id, make, says)


def default_text(*, before: str = "", after: str = "") -> str:
    """The default experiment's YAML text with lines added at its top or bottom."""
    body = (CONFIGS / "default.yaml").read_text()
    body = body.replace("deepspeed: deepspeed/zero2.json", "deepspeed: {deepspeed}")
    body = body.replace("output_dir: runs", "output_dir: {tmp}/runs")
    return before + body + after


def with_file(id: str, name: str, content, changes: dict, *says: str, base=dataset_raw, **kw):
    """A file `name` (text or bytes) in the case's folder, named by the changes as `{file}`."""

    def make(tmp: Path, mp) -> Path:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        resolved = {
            k: json.loads(json.dumps(v).replace("{file}", str(path)).replace("{tmp}", str(tmp)))
            for k, v in changes.items()
        }
        return write(tmp, apply(base(tmp), resolved))

    return Case(id, make, tuple(s.replace("{name}", name) for s in says), **kw)


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def train_file(id: str, name: str, content, *says: str, source: str = "gsm8k"):
    return with_file(id, name, content, {"data.train": {"source": source, "path": "{file}"}}, *says)


def output_dir_not_writable(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: answer as the system would for a user
        real = os.access
        mp.setattr(os, "access", lambda p, mode: real(p, mode) and Path(p) != locked)
    return write(tmp, apply(default_raw(tmp), {"output_dir": str(locked / "runs")}))


def hub_model_with_a_short_context(tmp: Path, mp) -> Path:
    model = tmp / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    changes = {"policies.0.hub_id": str(model), "generation.max_new_tokens": 80}
    return write(tmp, apply(dataset_raw(tmp), changes))


def output_dir_is_a_file(tmp: Path, mp) -> Path:
    (tmp / "results").write_text("not a folder\n")
    return write(tmp, apply(default_raw(tmp), {"output_dir": str(tmp / "results")}))


def missing_config(tmp: Path, mp) -> Path:
    return tmp / "absent.yaml"


def latin1_config(tmp: Path, mp) -> Path:
    path = tmp / "exp.yaml"
    path.write_bytes(default_text().replace("{deepspeed}", "x").encode() + b"# caf\xe9\n")
    return path


def deepspeed_file(id: str, content, *says: str):
    return with_file(
        id,
        "ds.json",
        content,
        {"sft.deepspeed": "{file}"},
        *says,
        base=default_raw,
        commands=("validate", "run", "status"),
    )


def ray_not_installed(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    """The Ray engine where neither Ray nor prefect-ray can be imported."""
    import importlib.util

    find_spec = importlib.util.find_spec
    mp.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("ray", "prefect_ray") else find_spec(name, *a),
    )
    return write(tmp, apply(default_raw(tmp), {"execution": {"engine": "ray"}}))


CONFIG_CASES = [
    # Unknown keys: named by their dotted path, with the key meant when the spelling is close.
    edit("unknown-top-level-key", {"learning_rate": 1e-3}, "learning_rate: unknown key"),
    edit("unknown-sft-key", {"sft.learning_rat": 1e-3}, "sft.learning_rat", "learning_rate?"),
    edit("unknown-arithmetic-key", {"data.arithmetic.level": [1]}, "data.arithmetic.level"),
    edit("unknown-flops-key", {"evaluation.flops.params": "total"}, "evaluation.flops.params"),
    edit("unknown-policy-key", {"policies.1.hidden": 256}, "policies.1.hidden", "hidden_size?"),
    edit("unknown-vllm-key", {"generation.vllm.prefix_caching": True}, "vllm.prefix_caching"),
    edit(
        "unknown-dataset-key",
        {"data.train": {"source": "gsm8k", "path": "x.jsonl", "rows": 3}},
        "data.train.rows: unknown key",
        base=dataset_raw,
    ),
    # Wrong types: strict, so nothing is coerced (booleans are no numbers, strings no numbers).
    edit("learning-rate-a-word", {"sft.learning_rate": "fast"}, "sft.learning_rate", "'fast'"),
    edit("max-steps-a-word", {"sft.max_steps": "many"}, "sft.max_steps", "valid integer"),
    edit("max-steps-true", {"sft.max_steps": True}, "sft.max_steps", "got True"),
    edit("seed-true", {"seed": True}, "seed: Input should be a valid integer"),
    edit("budget-true", {"evaluation.budgets": [1, True]}, "evaluation.budgets.1"),
    edit("modulus-a-float", {"data.arithmetic.modulus": 37.5}, "data.arithmetic.modulus"),
    edit("seed-a-string", {"seed": "zero"}, "seed:", "'zero'"),
    edit("bf16-a-word", {"sft.bf16": "sometimes"}, "sft.bf16", "valid boolean"),
    edit("bf16-a-number", {"sft.bf16": 1}, "sft.bf16", "valid boolean"),
    edit("weight-decay-infinite", {"sft.weight_decay": float("inf")}, "sft.weight_decay", "finite"),
    edit("learning-rate-nan", {"sft.learning_rate": float("nan")}, "sft.learning_rate", "finite"),
    edit(
        "temperature-infinite", {"generation.temperature": float("inf")}, "generation.temperature"
    ),
    edit("temperature-a-list", {"generation.temperature": [1.0]}, "generation.temperature"),
    edit("budgets-a-number", {"evaluation.budgets": 16}, "evaluation.budgets", "valid list"),
    edit("sft-a-number", {"sft": 5}, "sft: Input should be", "got 5"),
    edit("policies-a-mapping", {"policies": {"name": "S"}}, "policies", "valid list"),
    edit("name-a-number", {"name": 123}, "name", "valid string"),
    edit("name-missing", {"name": DELETE}, "name: missing", "add it"),
    # Values out of range.
    edit("max-steps-zero", {"sft.max_steps": 0}, "sft.max_steps", "greater than 0", "got 0"),
    edit("max-steps-negative", {"sft.max_steps": -5}, "sft.max_steps", "greater than 0"),
    edit("warmup-negative", {"sft.warmup_steps": -1}, "sft.warmup_steps", "greater than or"),
    edit("learning-rate-zero", {"sft.learning_rate": 0}, "sft.learning_rate", "greater than 0"),
    edit("unknown-scheduler", {"sft.lr_scheduler": "step"}, "sft.lr_scheduler", "'cosine'"),
    edit("top-p-zero", {"generation.top_p": 0}, "generation.top_p", "greater than 0"),
    edit("top-p-above-one", {"generation.top_p": 1.5}, "generation.top_p", "less than or equal"),
    edit("temperature-negative", {"generation.temperature": -0.1}, "generation.temperature"),
    edit("batch-size-zero", {"generation.batch_size": 0}, "generation.batch_size"),
    edit("device-unknown", {"generation.device": "gpu"}, "generation.device", "cuda"),
    edit("dtype-unknown", {"generation.dtype": "fp8"}, "generation.dtype", "bfloat16"),
    edit("budgets-not-powers-of-two", {"evaluation.budgets": [1, 3, 4]}, "powers of two"),
    edit("budgets-decreasing", {"evaluation.budgets": [1, 4, 2]}, "strictly increasing"),
    edit("budgets-empty", {"evaluation.budgets": []}, "evaluation.budgets", "at least one"),
    edit("budget-zero", {"evaluation.budgets": [0, 1]}, "evaluation.budgets.0"),
    edit("strategy-unknown", {"evaluation.strategies": ["tree_of_thought"]}, "tree_of_thought"),
    edit("strategies-empty", {"evaluation.strategies": []}, "evaluation.strategies"),
    edit("strategy-twice", {"evaluation.strategies": ["greedy", "greedy"]}, "named twice"),
    edit("evaluation-seed-negative", {"evaluation.seed": -5}, "evaluation.seed", "greater than"),
    edit("seed-too-large", {"seed": 2**40}, "seed: Input should be less than or equal"),
    edit("analysis-seed-negative", {"analysis.seed": -1}, "analysis.seed"),
    edit("modulus-one", {"data.arithmetic.modulus": 1}, "data.arithmetic.modulus"),
    edit("level-zero", {"data.arithmetic.levels": [0, 1]}, "data.arithmetic.levels.0"),
    edit("levels-empty", {"data.arithmetic.levels": []}, "data.arithmetic.levels"),
    edit("operation-unknown", {"data.arithmetic.operations": ["/"]}, "operations.0"),
    edit("operations-empty", {"data.arithmetic.operations": []}, "data.arithmetic.operations"),
    edit("operation-twice", {"data.arithmetic.operations": ["+", "+"]}, "lists one twice"),
    edit("tracking-mode-unknown", {"tracking.mode": "sometimes"}, "tracking.mode", "offline"),
    edit("name-with-a-space", {"name": "my experiment"}, "name: String should match"),
    edit("fit-fraction-one", {"analysis.fit_fraction": 1.0}, "analysis.fit_fraction"),
    edit("bootstrap-negative", {"analysis.bootstrap": -1}, "analysis.bootstrap"),
    edit("flops-per-decade-zero", {"analysis.flops_per_decade": 0}, "flops_per_decade"),
    edit("gpu-memory-above-one", {"generation.vllm.gpu_memory_utilization": 1.5}, "gpu_memory"),
    edit("tensor-parallel-zero", {"generation.vllm.tensor_parallel_size": 0}, "tensor_parallel"),
    edit("rollouts-zero", {"prm.labels.rollouts_per_step": 0}, "prm.labels.rollouts_per_step"),
    edit(
        "rollout-temperature-negative",
        {"prm.labels.rollout_temperature": -0.5},
        "prm.labels.rollout_temperature",
    ),
    edit("paper-params-unknown", {"evaluation.flops.paper_params": "half"}, "paper_params"),
    edit(
        "dataset-source-unknown",
        {"data.train": {"source": "mmlu", "path": "x.jsonl"}},
        "data.train.source",
        "gsm8k",
        base=dataset_raw,
    ),
    # The step format: a template whose prompts hold no question, empty or broken pieces.
    edit(
        "template-escaped-placeholder",
        {"data.format.prompt_template": "Q: {{question}}"},
        "data.format.prompt_template",
        "escaped",
        "single braces",
    ),
    edit(
        "template-without-placeholder",
        {"data.format.prompt_template": "Q:\n"},
        "data.format.prompt_template",
        "{question}",
    ),
    edit(
        "template-other-placeholder",
        {"data.format.prompt_template": "{question} {answer}"},
        "data.format.prompt_template",
        "{answer}",
    ),
    edit(
        "template-unmatched-brace",
        {"data.format.prompt_template": "Q: {question"},
        "data.format.prompt_template",
        "double literal braces",
    ),
    edit(
        "answer-phrase-empty",
        {"data.format.answer_phrase": ""},
        "data.format.answer_phrase",
        "must not be empty",
        "'The answer is:'",
    ),
    edit("tag-empty", {"data.format.tag": ""}, "data.format.tag", "must not be empty", "' ки'"),
    edit("tag-blank", {"data.format.tag": "  "}, "data.format.tag", "blank"),
    edit(
        "answer-phrase-two-lines",
        {"data.format.answer_phrase": "The\nanswer:"},
        "data.format.answer_phrase",
        "line break",
    ),
    # Prompting: chat templates, system prompts and few-shot examples.
    edit(
        "system-prompt-without-chat",
        {"data.format.system_prompt": "Think."},
        "data.format.system_prompt",
        "data.format.chat_template",
    ),
    edit(
        "chat-template-does-not-parse",
        {"data.format.chat_template": "{% for m in messages %}{{ m.content }}"},
        "data.format.chat_template",
        "does not parse",
        "line 1",
    ),
    edit("chat-template-blank", {"data.format.chat_template": " "}, "data.format.chat_template"),
    edit(
        "chat-template-changes-question",
        {"data.format.chat_template": "{% for m in messages %}{{ m.content | upper }}{% endfor %}"},
        "data.format.chat_template",
        "changes the question's text",
    ),
    edit(
        "chat-template-raises",
        {
            "data.format.chat_template": "{{ raise_exception('no system role') }}",
            "data.format.system_prompt": "Think.",
        },
        "data.format.chat_template",
        "no system role",
    ),
    edit(
        "chat-template-of-the-task-tokenizer",
        {"data.format.chat_template": "tokenizer"},
        "data.format.chat_template",
        "S, L use the synthetic task's tokenizer",
    ),
    edit(
        "few-shot-without-answer",
        {"data.format.few_shot": [{"question": "1 + 1?", "solution": ["1 + 1 = 2"]}]},
        "data.format.few_shot.0.solution",
        "'The answer is:'",
    ),
    edit(
        "few-shot-step-with-tag",
        {"data.format.few_shot": [{"question": "1?", "solution": ["2 ки", "The answer is: 2"]}]},
        "data.format.few_shot.0.solution.0",
        "step tag",
    ),
    edit(
        "few-shot-step-two-lines",
        {"data.format.few_shot": [{"question": "1?", "solution": ["a\nb", "The answer is: 2"]}]},
        "data.format.few_shot.0.solution.0",
        "line break",
    ),
    edit(
        "few-shot-blank-question",
        {"data.format.few_shot": [{"question": " ", "solution": ["The answer is: 2"]}]},
        "data.format.few_shot.0.question",
        "blank",
    ),
    edit(
        "few-shot-no-steps",
        {"data.format.few_shot": [{"question": "1?", "solution": []}]},
        "data.format.few_shot.0.solution",
    ),
    # Settings that contradict each other, or that would fail only after training.
    edit("any-order-not-commuting", {"data.arithmetic.operations": ["+", "*"]}, "any_order"),
    edit(
        "too-few-test-questions",
        {"data.arithmetic.test_size": 5000},
        "data.arithmetic.test_size",
        "level 1 with modulus 37",
    ),
    edit(
        "search-budgets-decreasing",
        {"evaluation.search.budgets": {"rebase": [8, 4]}},
        "evaluation.search.budgets",
        "rebase",
    ),
    edit(
        "beam-budgets-not-multiples",
        {
            "evaluation.search.beam_width": 3,
            "evaluation.search.budgets": {"rebase": [4], "mcts": [8], "beam_search": [3, 4, 6]},
        },
        "evaluation.search",
        "beam_width 3",
    ),
    edit(
        "tree-search-without-budgets",
        {"evaluation.strategies": ["mcts"], "evaluation.search.budgets": {"rebase": [4]}},
        "evaluation",
        "no budgets for ['mcts']",
    ),
    edit(
        "search-budgets-of-a-vote",
        {"evaluation.search.budgets": {"majority_vote": [4]}},
        "not tree searches",
    ),
    edit("prm-strategies-without-prm", {"prm": None}, "evaluation.strategies", "need a PRM"),
    edit("prm-without-a-source", {"prm.labels": None}, "prm:", "either `labels`"),
    edit(
        "prm-dataset-not-math-shepherd",
        {"prm.labels": None, "prm.dataset": {"source": "gsm8k", "path": "x.jsonl"}},
        "prm:",
        "math_shepherd",
    ),
    edit("labelling-policy-unknown", {"prm.labels.policy": "XL"}, "prm.labels.policy", "'XL'"),
    edit("completer-unknown", {"prm.labels.completer": "XL"}, "prm.labels.completer"),
    edit(
        "greedy-generation-and-label-temperature",
        {"generation.temperature": 0.0},
        "prm.labels.temperature",
        "above 0",
    ),
    edit(
        "greedy-rollouts-repeated",
        {"prm.labels.rollouts_per_step": 2, "prm.labels.rollout_temperature": 0.0},
        "prm.labels",
        "rollouts_per_step to 1",
    ),
    edit(
        "exact-labels-with-rollout-settings",
        {"prm.labels.kind": "exact"},
        "prm.labels.completer",
        "no rollouts",
        "kind: rollout",
    ),
    edit(
        "exact-labels-without-the-synthetic-task",
        {"prm": {"labels": {"kind": "exact"}, "init_from": "llemma-7b"}},
        "prm.labels.kind",
        "data.arithmetic",
        base=dataset_raw,
    ),
    edit(
        "nominal-flops-without-sizes",
        {"evaluation.flops.paper_params": "nominal"},
        "evaluation.flops.paper_params",
        "nominal_params",
    ),
    edit("policy-hub-and-size", {"policies.0.hub_id": "EleutherAI/llemma_7b"}, "policies.0"),
    edit("policy-size-incomplete", {"policies.0.num_heads": DELETE}, "policies.0", "num_heads"),
    edit("policy-head-dim-16", {"policies.0.num_heads": 8}, "policies.0", "(32, 64, 128)"),
    edit("policy-head-dim-24", {"policies.0.hidden_size": 96}, "policies.0", "= 24 must be"),
    edit(
        "policy-head-dim-256",
        {"policies.0.num_heads": 1, "policies.0.hidden_size": 256},
        "policies.0",
        "= 256 must be",
    ),
    edit("policy-heads-not-dividing", {"policies.0.num_heads": 3}, "policies.0", "42.6667"),
    edit(
        "policy-hub-and-ffn-size",
        {"policies": [{"name": "p", "hub_id": "a/b", "intermediate_size": 64}]},
        "policies.0: give either `hub_id` or a size",
        base=dataset_raw,
    ),
    edit("policy-names-twice", {"policies.1.name": "S"}, "policies", "unique"),
    edit("no-policies", {"policies": []}, "policies", "at least one policy"),
    edit("data-without-source", {"data": {}}, "data:", "either `arithmetic`"),
    edit("data-train-only", {"data.eval": []}, "data:", "`eval` datasets", base=dataset_raw),
    edit(
        "data-eval-only-and-a-policy-to-train",
        {"data.train": None},
        "data.train: missing, and policies ['llemma-7b'] are fine-tuned on it",
        base=dataset_raw,
    ),
    edit(
        "data-eval-only-and-steps-to-label",
        {
            "data.train": None,
            "policies": [{"name": "given", "checkpoint": "org/model"}],
            "prm": {"labels": {"questions": 10}},
            "evaluation.strategies": ["greedy", "weighted_vote"],
        },
        "data.train: missing, and prm.labels labels steps of its questions",
        base=dataset_raw,
    ),
    edit(
        "data-arithmetic-and-datasets",
        {"data.train": {"source": "gsm8k", "path": "openai/gsm8k"}},
        "data:",
        "cannot be",
    ),
    edit(
        "sized-policy-on-datasets",
        {"policies": [{"name": "S", "hidden_size": 128, "num_layers": 2, "num_heads": 4}]},
        "policies.0",
        "hub_id",
        base=dataset_raw,
    ),
    edit("sft-max-length-below-the-prompt", {"sft.max_length": 8}, "sft.max_length", "at least 17"),
    edit("prm-max-length-below-a-step", {"prm.max_length": 20}, "prm.max_length", "at least 25"),
    edit(
        "max-new-tokens-beyond-the-context",
        {"generation.max_new_tokens": 10**12},
        "generation.max_new_tokens",
        "context of 128",
        "at most 112",
    ),
    Case(
        "max-new-tokens-beyond-a-hub-model-context",
        hub_model_with_a_short_context,
        ("generation.max_new_tokens", "context of 64 tokens (its max_position_embeddings)"),
    ),
    edit(
        "max-new-tokens-beyond-vllm-max-model-len",
        {"generation.backend": "vllm", "generation.vllm.max_model_len": 64},
        "generation.max_new_tokens",
        "generation.vllm.max_model_len",
        "at most 48",
    ),
    edit(
        "label-questions-beyond-the-training-split",
        {"prm.labels.questions": 30000},
        "prm.labels.questions",
        "30100",
        "data.arithmetic.train_size",
    ),
    edit("nodes-without-hostfile", {"sft.num_nodes": 2}, "sft.hostfile", "num_nodes"),
    edit(
        "hostfile-missing",
        {"sft.num_nodes": 2, "sft.hostfile": "hosts"},
        "sft.hostfile",
        "does not exist",
    ),
    edit(
        "prm-tokens-the-same",
        {"prm.good_token": " +", "prm.bad_token": " +"},
        "prm.bad_token",
        "two tokens",
    ),
    edit("prm-token-empty", {"prm.good_token": ""}, "prm.good_token", "must not be empty"),
    # An oracle PRM: its kind and AUC agree, nothing trains or gives it, the synthetic task.
    edit(
        "oracle-settings-of-a-learned-prm",
        {"prm.oracle": {"auc": 0.9}},
        "prm.oracle:",
        "prm.kind is learned",
        "noisy_oracle",
    ),
    edit(
        "exact-oracle-below-auc-1",
        {"prm.kind": "oracle", "prm.labels": None, "prm.oracle": {"auc": 0.9}},
        "prm.oracle.auc",
        "use prm.kind: noisy_oracle",
    ),
    edit(
        "noisy-oracle-without-an-auc",
        {"prm.kind": "noisy_oracle", "prm.labels": None},
        "prm.oracle.auc",
        "set prm.oracle.auc",
    ),
    edit(
        "noisy-oracle-at-auc-1",
        {"prm.kind": "noisy_oracle", "prm.labels": None, "prm.oracle": {"auc": 1.0}},
        "prm.oracle.auc",
        "prm.kind: oracle",
    ),
    edit(
        "oracle-auc-at-chance",
        {"prm.kind": "noisy_oracle", "prm.labels": None, "prm.oracle": {"auc": 0.5}},
        "prm.oracle.auc",
        "greater than 0.5",
    ),
    edit(
        "oracle-with-labels",
        {"prm.kind": "oracle"},
        "prm.labels",
        "neither trained nor given",
        "prm.labels: null",
    ),
    edit(
        "oracle-with-a-checkpoint",
        {"prm.kind": "oracle", "prm.labels": None, "prm.checkpoint": "org/prm"},
        "prm.checkpoint",
        "neither trained nor given",
    ),
    edit(
        "oracle-with-a-dataset",
        {
            "prm.kind": "oracle",
            "prm.labels": None,
            "prm.dataset": {"source": "math_shepherd", "path": "x.jsonl"},
        },
        "prm.dataset",
        "neither trained nor given",
    ),
    edit(
        "oracle-cost-of-an-unknown-policy",
        {"prm.kind": "oracle", "prm.labels": None, "prm.init_from": "XL"},
        "prm.init_from",
        "'XL' is not a policy",
    ),
    edit(
        "oracle-on-datasets",
        {"prm": {"kind": "oracle"}, "evaluation.strategies": ["greedy", "weighted_vote"]},
        "prm.kind",
        "synthetic task only",
        "data.arithmetic",
        base=dataset_raw,
    ),
    # The PRM's training section: typed like sft's, its files checked like sft's.
    edit("unknown-prm-training-key", {"prm.training.lr": 0.1}, "prm.training.lr"),
    edit(
        "prm-training-negative-weight-decay",
        {"prm.training.weight_decay": -0.1},
        "prm.training.weight_decay",
        "-0.1",
    ),
    edit(
        "prm-training-bad-scheduler",
        {"prm.training.lr_scheduler": "step"},
        "prm.training.lr_scheduler",
        "'step'",
    ),
    edit(
        "prm-nodes-without-hostfile",
        {"prm.training.num_nodes": 2},
        "prm.training.hostfile",
        "2 nodes",
    ),
    edit(
        "prm-hostfile-missing",
        {"prm.training.num_nodes": 2, "prm.training.hostfile": "hosts"},
        "prm.training.hostfile",
        "does not exist",
    ),
    edit(
        "prm-deepspeed-missing",
        {"prm.training.deepspeed": "deepspeed/zero9.json"},
        "prm.training.deepspeed",
        "zero9.json does not exist",
        commands=("validate", "run", "status"),
    ),
    # Where the run's shards go.
    edit(
        "ray-address-not-an-address",
        {"execution": {"engine": "ray", "ray": {"address": "http://head:8265"}}},
        "execution.ray.address",
        "ray://HEAD:10001",
    ),
    edit("ray-no-shards", {"execution.ray.shards": 0}, "execution.ray.shards"),
    edit(
        "ray-shard-gpus-beside-cpu-generation",
        {"execution": {"engine": "ray", "ray": {"num_gpus_per_shard": 1}}},
        "execution.ray.num_gpus_per_shard",
        "generation.device: cpu",
    ),
    edit(
        "ray-shard-gpus-unlike-tensor-parallel",
        {
            "execution": {"engine": "ray", "ray": {"num_gpus_per_shard": 2}},
            "generation.backend": "vllm",
        },
        "execution.ray.num_gpus_per_shard",
        "tensor_parallel_size = 1",
    ),
    Case("ray-not-installed", ray_not_installed, ("execution.engine:", "pip install -e '.[ray]'")),
]

FILE_CASES = [
    # The experiment file itself.
    text("duplicate-top-level-key", default_text(after="seed: 3\n"), "exp.yaml:", "seed: given"),
    text(
        "duplicate-nested-key",
        default_text().replace("  max_steps: 400\n", "  max_steps: 400\n  max_steps: 40\n"),
        "sft.max_steps: given twice",
        "also on line",
    ),
    text("yaml-unclosed-bracket", default_text(after="extra: [1, 2\n"), "not valid YAML"),
    text("yaml-bad-indentation", default_text(after="sft:\n  a: 1\n b: 2\n"), "not valid YAML"),
    text("yaml-a-list", "- a\n- b\n", "expected a mapping", "got a list"),
    text("yaml-a-string", "just a string\n", "expected a mapping", "got a str"),
    text("yaml-empty", "", "expected a mapping", "got nothing"),
    Case("config-missing", missing_config, ("absent.yaml: does not exist",)),
    Case("config-not-utf8", latin1_config, ("exp.yaml:", "not UTF-8")),
    # DeepSpeed files: refused by `status` too, which reads them for the stage keys.
    edit(
        "deepspeed-missing",
        {"sft.deepspeed": "deepspeed/zero9.json"},
        "sft.deepspeed",
        "zero9.json does not exist",
        commands=("validate", "run", "status"),
    ),
    deepspeed_file(
        "deepspeed-invalid-json",
        '{\n  "train_batch_size": 8,\n}\n',
        "sft.deepspeed",
        "ds.json:3: not valid JSON",
    ),
    deepspeed_file("deepspeed-not-an-object", "[1, 2]\n", "sft.deepspeed", "JSON list"),
    deepspeed_file("deepspeed-empty", "", "sft.deepspeed", "ds.json:1: not valid JSON"),
    deepspeed_file("deepspeed-not-utf8", b'{"a": "\xff"}', "sft.deepspeed", "not UTF-8"),
    edit(
        "deepspeed-a-folder",
        {"sft.deepspeed": "{tmp}"},
        "sft.deepspeed",
        "is a folder",
        commands=("validate", "run", "status"),
    ),
    # Dataset files: the file and line, and what the row needs.
    train_file("dataset-empty", "train.jsonl", "", "data.train.path", "train.jsonl: no rows"),
    train_file("dataset-blank-lines", "train.jsonl", "\n\n", "train.jsonl: no rows"),
    train_file(
        "jsonl-malformed-line",
        "train.jsonl",
        jsonl(GSM8K_ROW, GSM8K_ROW, '{"question": "2+2?", "answer": }'),
        "train.jsonl:3: not valid JSON",
    ),
    train_file(
        "jsonl-line-an-array",
        "train.jsonl",
        jsonl(GSM8K_ROW, [1, 2]),
        "train.jsonl:2: a JSON array",
        "one JSON object",
    ),
    train_file(
        "jsonl-missing-column",
        "train.jsonl",
        jsonl(GSM8K_ROW, {"question": "2+2?", "solution": "4"}),
        "train.jsonl:2: no column 'answer'",
        "question, solution",
    ),
    train_file(
        "jsonl-null-column",
        "train.jsonl",
        jsonl({"question": "2+2?", "answer": None}),
        "train.jsonl:1: column 'answer' empty",
    ),
    train_file(
        "jsonl-number-for-text",
        "train.jsonl",
        jsonl({"question": 4, "answer": "4"}),
        "train.jsonl:1: column 'question' holds int",
    ),
    train_file(
        "gsm8k-answer-without-marker",
        "train.jsonl",
        jsonl(GSM8K_ROW, {"question": "2+2?", "answer": "4"}),
        "train.jsonl:2: not a gsm8k row",
        "####",
    ),
    train_file(
        "jsonl-latin-1",
        "train.jsonl",
        json.dumps(GSM8K_ROW).encode() + b'\n{"question": "caf\xe9?", "answer": "#### 1"}\n',
        "train.jsonl:2: not UTF-8",
    ),
    train_file(
        "csv-extra-field",
        "train.csv",
        MATH_CSV_HEADER
        + MATH_CSV_ROW
        + "What is 2+2?,Level 1,Algebra,We add: $\\boxed{4}$,extra\n",
        "train.csv:3: 5 fields where the header has 4",
        "quote",
        source="math",
    ),
    train_file(
        "csv-unclosed-quote",
        "train.csv",
        MATH_CSV_HEADER + MATH_CSV_ROW + 'What is 2+2?,Level 1,Algebra,"We add\n',
        "train.csv:3: not valid CSV",
        source="math",
    ),
    train_file(
        "csv-missing-column",
        "train.csv",
        "problem,level,type\n1+1?,Level 1,Algebra\n",
        "train.csv:1: no column 'solution' in the header",
        source="math",
    ),
    train_file(
        "csv-header-only", "train.csv", MATH_CSV_HEADER, "train.csv: no rows", source="math"
    ),
    train_file(
        "csv-utf-16",
        "train.csv",
        (MATH_CSV_HEADER + MATH_CSV_ROW).encode("utf-16"),
        "train.csv:1: not UTF-8",
        source="math",
    ),
    train_file(
        "math-without-boxed-answer",
        "train.csv",
        MATH_CSV_HEADER + MATH_CSV_ROW + "What is 2+2?,Level 1,Algebra,It is four.\n",
        "train.csv:3: not a math row",
        "boxed",
        source="math",
    ),
    train_file(
        "json-array-invalid",
        "train.json",
        '[\n  {"question": "1+1?"},\n  oops\n]\n',
        "train.json:3: not valid JSON",
    ),
    train_file(
        "json-array-item-not-an-object",
        "train.json",
        json.dumps([GSM8K_ROW, "a string"], indent=1),
        "train.json:6: a JSON string",
        "each item of the array",
    ),
    train_file("json-array-empty", "train.json", "[]\n", "train.json: no rows"),
    train_file(
        "parquet-not-parquet",
        "train.parquet",
        b"PAR1 but not really\n",
        "train.parquet: not a readable Parquet file",
    ),
    with_file(
        "dataset-missing",
        "unused.txt",
        "",
        {"data.train.path": "{tmp}/nowhere.jsonl"},
        "data.train.path",
        "nowhere.jsonl: no such file",
    ),
    train_file(
        "dataset-unsupported-type",
        "train.txt",
        "What is 1+1? 2\n",
        "train.txt: unsupported file type '.txt'",
        ".jsonl",
    ),
    with_file(
        "eval-dataset-malformed",
        "eval.jsonl",
        '{"problem": \n',
        {"data.eval": [{"source": "math500", "path": "{file}"}]},
        "data.eval.0.path",
        "eval.jsonl:1: not valid JSON",
    ),
    with_file(
        "eval-dataset-no-usable-problem",
        "eval.jsonl",
        jsonl({**SHEPHERD_ROW, "label": SHEPHERD_ROW["label"].replace("+", "-")}),
        {"data.eval": [{"source": "math_shepherd", "path": "{file}"}]},
        "data.eval.0.path",
        "no usable math_shepherd problem",
    ),
    with_file(
        "prm-dataset-bad-labels",
        "shepherd.jsonl",
        jsonl(SHEPHERD_ROW, {**SHEPHERD_ROW, "label": "no marks"}),
        {
            "prm": {
                "dataset": {"source": "math_shepherd", "path": "{file}"},
                "init_from": "EleutherAI/llemma_7b",
            },
            "evaluation.strategies": ["greedy", "weighted_vote"],
        },
        "prm.dataset.path",
        "shepherd.jsonl:2: not a math_shepherd row",
        "label",
    ),
    with_file(
        "label-questions-beyond-the-training-file",
        "train.jsonl",
        jsonl(*[GSM8K_ROW] * 3),
        {
            "data.train": {"source": "gsm8k", "path": "{file}"},
            "prm": {"labels": {"questions": 10, "heldout_questions": 2}},
            "evaluation.strategies": ["greedy", "weighted_vote"],
        },
        "prm.labels.questions",
        "training split has 3",
        "train.jsonl",
    ),
    # The output folder.
    Case("output-dir-a-file", output_dir_is_a_file, ("output_dir:", "results is a file")),
    Case("output-dir-not-writable", output_dir_not_writable, ("output_dir:", "cannot write in")),
]

CASES = CONFIG_CASES + FILE_CASES
CASE_COUNT = len(CASES)


@pytest.fixture
def cli(monkeypatch):
    """`main` as the command line runs it, with the run's flow replaced by a tripwire and the
    process-wide settings it makes (SIGTERM handler, environment) undone afterwards."""
    flow = types.ModuleType("inferscale.flows.pipeline")

    def experiment_flow(*args, **kwargs):
        raise AssertionError("the run started work on a bad input")

    flow.experiment_flow, flow.StagesFailed = experiment_flow, RuntimeError
    monkeypatch.setitem(sys.modules, "inferscale.flows.pipeline", flow)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    handler = signal.getsignal(signal.SIGTERM)
    yield main
    signal.signal(signal.SIGTERM, handler)


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_before_any_work(case, tmp_path, monkeypatch, cli, capsys):
    config = case.make(tmp_path, monkeypatch)
    before = files_under(tmp_path)
    for command in case.commands:
        with pytest.raises(SystemExit) as exit:
            cli([command, str(config)])
        assert exit.value.code == 2, command
        out, err = capsys.readouterr()
        assert out == "", command
        assert len(err.splitlines()) == 1, f"{command}: {err}"
        line = err.rstrip("\n")
        assert line.startswith(f"{config}:"), line
        for part in case.says:
            assert part in line, f"{command}: {part!r} not in {line!r}"
    assert files_under(tmp_path) == before  # nothing written: no stage began


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == CASE_COUNT


def test_readme_quotes_the_number_of_cases():
    assert f"{CASE_COUNT} bad inputs" in (REPO / "README.md").read_text()
