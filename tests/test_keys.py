"""Every config field, one row each: a setting that can change what a stage writes changes that
stage's key (and so the keys of every stage that reads it), and a declared speed setting changes
none. The rows are checked against a walk of the config's models, so that a new field without
its row fails here."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pipeline_config import DEFAULT_INPUTS, downstream

from inferscale import stages
from inferscale.config import ConfigError, ExperimentConfig, _model_in, parse_config, read_yaml
from inferscale.models.launch import prm_spec
from inferscale.stages import plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
HOSTFILE, OTHER_HOSTFILE = "<hostfile>", "<other hostfile>"  # files written for the test
BASES = {
    # Arithmetic data, policies trained from scratch, step labels by rollouts, a PRM from S.
    "default": read_yaml(CONFIGS / "default.yaml"),
    # Upstream datasets, hub policies, a PRM trained on Math-Shepherd from a hub model; online.
    "llemma": read_yaml(CONFIGS / "llemma.yaml"),
}
BASES["llemma"]["prm"]["heldout"] = {
    "source": "math_shepherd",
    "path": "peiyi9979/Math-Shepherd",
    "split": "test",
}
# The default with S given as a hub checkpoint (L still trained) and a given Math-Shepherd PRM
# measured on held-out labels.
BASES["given"] = copy.deepcopy(BASES["default"])
BASES["given"]["policies"][0] = {"name": "S", "checkpoint": "org/tiny-s", "revision": "abc123"}
BASES["given"]["prm"] = {
    "checkpoint": "org/prm",
    "revision": "r1",
    "format": "math_shepherd",
    "heldout": {"source": "math_shepherd", "path": "org/heldout", "split": "test"},
}
# The default evaluated with a noisy oracle instead of a learned PRM, its reads costing as S's
# model (prm.init_from).
BASES["oracle"] = copy.deepcopy(BASES["default"])
BASES["oracle"]["prm"] |= {"kind": "noisy_oracle", "labels": None, "oracle": {"auc": 0.9}}
# What each artifact of each base reads (a test's own account, not the planner's).
INPUTS = {
    "default": DEFAULT_INPUTS,
    "oracle": {
        "prepare_data/data": (),
        "sft/S": ("prepare_data/data",),
        "sft/L": ("prepare_data/data",),
        "evaluate/S": ("prepare_data/data", "sft/S"),
        "evaluate/L": ("prepare_data/data", "sft/L", "sft/S"),
        "analyze/report": ("evaluate/S", "evaluate/L"),
    },
    "given": {
        "prepare_data/data": (),
        "sft/L": ("prepare_data/data",),
        "measure_prm/prm": (),
        "evaluate/S": ("prepare_data/data",),
        "evaluate/L": ("prepare_data/data", "sft/L"),
        "analyze/report": ("evaluate/S", "evaluate/L", "measure_prm/prm"),
    },
    "llemma": {
        "prepare_data/data": (),
        "sft/llemma-7b": ("prepare_data/data",),
        "sft/llemma-34b": ("prepare_data/data",),
        "train_prm/prm": (),
        "evaluate/llemma-7b": ("prepare_data/data", "sft/llemma-7b", "train_prm/prm"),
        "evaluate/llemma-34b": ("prepare_data/data", "sft/llemma-34b", "train_prm/prm"),
        "analyze/report": ("evaluate/llemma-7b", "evaluate/llemma-34b", "train_prm/prm"),
    },
}
DATA = "prepare_data/data"
SFT = {"default": ("sft/S", "sft/L"), "llemma": ("sft/llemma-7b", "sft/llemma-34b")}
LABELS, PRM, REPORT = "label_steps/S", "train_prm/prm", "analyze/report"
EVALUATE = {
    "default": ("evaluate/S", "evaluate/L"),
    "llemma": ("evaluate/llemma-7b", "evaluate/llemma-34b"),
}


@dataclass(frozen=True)
class Row:
    value: object  # the field's new value
    keys: tuple[str, ...] = ()  # the artifacts that read the field (their keys change)
    base: str = "default"
    also: dict = field(default_factory=dict)  # other fields the new value needs
    kind: str = "setting"  # setting | speed | place (moves the run) | fixed (one valid value)
    context: dict = field(default_factory=dict)  # fields set before and after alike


def dotted(changes: dict) -> dict:
    return {k.replace("__", "."): v for k, v in changes.items()}


def setting(value, *keys, base="default", **also) -> Row:
    return Row(value, tuple(keys), base, dotted(also))


def speed(value, base="default", context: dict | None = None) -> Row:
    return Row(value, (), base, kind="speed", context=dotted(context or {}))


def place(value) -> Row:
    return Row(value, kind="place")


def fixed(value, base) -> Row:
    return Row(value, base=base, kind="fixed")


def llemma(value, *keys, **also) -> Row:
    return setting(value, *keys, base="llemma", **also)


def given(value, *keys, **also) -> Row:
    return setting(value, *keys, base="given", **also)


def oracle(value, *keys, **also) -> Row:
    return setting(value, *keys, base="oracle", **also)


GIVEN_PRM_READERS = ("measure_prm/prm", "evaluate/S", "evaluate/L")
L_SFT, L_EVAL = SFT["llemma"], EVALUATE["llemma"]
EXAMPLE = {"question": "What is 1 + 1?", "solution": ["1 + 1 = 2", "The answer is: 2"]}
D_SFT, D_EVAL = SFT["default"], EVALUATE["default"]
GENERATES = (LABELS, *D_EVAL)
TABLE: dict[str, Row] = {
    "name": place("other"),
    "output_dir": place("elsewhere"),
    "seed": setting(1, DATA, *D_SFT, LABELS, PRM),
    # data: prepared once, read by every later stage through the data's key
    "data.arithmetic.modulus": setting(41, DATA),
    "data.arithmetic.levels": setting([1, 2, 3, 4], DATA),
    "data.arithmetic.train_size": setting(10000, DATA),
    "data.arithmetic.test_size": setting(250, DATA),
    "data.arithmetic.swap_rate": setting(0.5, DATA),
    "data.arithmetic.operations": setting(["-", "+"], DATA),
    "data.arithmetic.any_order": setting(False, DATA),
    "data.train.source": llemma("gsm8k", DATA),
    "data.train.path": llemma("other/MetaMathQA", DATA),
    "data.train.split": llemma("validation", DATA),
    "data.train.subset": llemma("main", DATA),
    "data.train.limit": llemma(1000, DATA),
    "data.eval.0.source": llemma("math", DATA),
    "data.eval.0.path": llemma("other/MATH-500", DATA),
    "data.eval.0.split": llemma("validation", DATA),
    "data.eval.0.subset": llemma("algebra", DATA),
    "data.eval.0.limit": llemma(50, DATA),
    "data.format.tag": setting(" <s>", DATA, LABELS, PRM, *D_EVAL),
    "data.format.answer_phrase": setting("So:", DATA, LABELS, PRM, *D_EVAL),
    "data.format.prompt_template": setting("Q: {question}\nA:\n", DATA, LABELS, PRM, *D_EVAL),
    # How policies are prompted: the data's key (so SFT's) and the evaluations', not the PRM's,
    # which reads the plain prompt.
    "data.format.chat_template": llemma("tokenizer", DATA, *L_EVAL),
    "data.format.system_prompt": Row(
        "Think.", (DATA, *L_EVAL), "llemma", context={"data.format.chat_template": "tokenizer"}
    ),
    "data.format.few_shot.0.question": Row(
        "What is 2 + 2?", (DATA, *L_EVAL), "llemma", context={"data.format.few_shot": [EXAMPLE]}
    ),
    "data.format.few_shot.0.solution": Row(
        ["The answer is: 2"], (DATA, *L_EVAL), "llemma", context={"data.format.few_shot": [EXAMPLE]}
    ),
    # policies: what SFT builds and trains; a renamed policy is read under its new name
    "policies.0.name": setting(
        "T", LABELS, PRM, "evaluate/S", REPORT, prm__labels__policy="T", prm__init_from="T"
    ),
    "policies.0.hub_id": llemma("EleutherAI/other", "sft/llemma-7b"),
    "policies.0.hidden_size": setting(256, "sft/S"),
    "policies.0.num_layers": setting(3, "sft/S"),
    "policies.0.num_heads": setting(2, "sft/S"),
    "policies.0.intermediate_size": setting(256, "sft/S"),
    "policies.0.learning_rate": setting(1e-3, "sft/S"),
    "policies.0.nominal_params": setting(1e6, "evaluate/S"),
    # given checkpoints: their identity is an input of the stages that read them
    "policies.0.checkpoint": given("org/other", "evaluate/S"),
    "policies.0.revision": given("def456", "evaluate/S"),
    "prm.checkpoint": given("org/other-prm", *GIVEN_PRM_READERS),
    "prm.revision": given("r2", *GIVEN_PRM_READERS),
    "prm.format": given("rlhflow", *GIVEN_PRM_READERS),
    # sft (the llemma base: its PRM starts from a hub model, so a PRM key that changes here
    # changes because PRM training reads the setting)
    "sft.max_steps": llemma(100, *L_SFT),
    "sft.per_device_batch_size": llemma(8, *L_SFT),
    "sft.gradient_accumulation_steps": llemma(8, *L_SFT, PRM),
    "sft.learning_rate": llemma(1e-5, *L_SFT),
    "sft.warmup_steps": llemma(10, *L_SFT),
    "sft.lr_scheduler": llemma("linear", *L_SFT, PRM),
    "sft.weight_decay": llemma(0.1, *L_SFT, PRM),
    "sft.max_length": llemma(2048, *L_SFT),
    "sft.num_processes": llemma(4, *L_SFT, PRM),
    "sft.num_nodes": llemma(2, *L_SFT, PRM, sft__hostfile=HOSTFILE),
    "sft.hostfile": speed(
        OTHER_HOSTFILE, base="llemma", context={"sft__num_nodes": 2, "sft__hostfile": HOSTFILE}
    ),
    "sft.deepspeed": llemma("deepspeed/zero2.json", *L_SFT, PRM),
    "sft.bf16": llemma(False, *L_SFT, PRM),
    "sft.use_cpu": llemma(True, *L_SFT, PRM),
    "sft.threads_per_process": llemma(4, *L_SFT, PRM),
    "sft.logging_steps": speed(1, base="llemma"),
    # generation: step labels and evaluations generate (labels have their own sampling)
    "generation.backend": setting("vllm", *GENERATES),
    "generation.device": speed("cuda"),
    "generation.dtype": setting("bfloat16", *GENERATES),
    "generation.batch_size": speed(8),
    "generation.threads": speed(3),
    "generation.max_new_tokens": setting(64, *GENERATES),
    # the default's labels sample at the evaluation's temperature
    "generation.temperature": setting(0.7, *GENERATES),
    "generation.top_p": setting(0.9, *D_EVAL),
    "generation.prefix_cache_bytes": speed(0),
    "generation.vllm.tensor_parallel_size": speed(2),
    "generation.vllm.gpu_memory_utilization": speed(0.5),
    "generation.vllm.kv_cache_memory_bytes": speed(2**30),
    "generation.vllm.max_model_len": setting(256, *GENERATES),
    "generation.vllm.enable_prefix_caching": speed(False),
    "generation.vllm.enable_chunked_prefill": speed(False),
    "generation.vllm.enforce_eager": speed(True),
    # step labels
    "prm.labels.kind": setting(
        "exact",
        LABELS,
        prm__labels__completer=None,
        prm__labels__rollouts_per_step=4,
        prm__labels__rollout_temperature=None,
    ),
    "prm.labels.policy": setting("L", LABELS),
    "prm.labels.completer": setting("S", LABELS),
    "prm.labels.questions": setting(1500, LABELS),
    "prm.labels.heldout_questions": setting(50, LABELS),
    "prm.labels.samples_per_question": setting(3, LABELS),
    "prm.labels.rollouts_per_step": setting(2, LABELS, prm__labels__rollout_temperature=0.5),
    "prm.labels.temperature": setting(0.8, LABELS),
    "prm.labels.rollout_temperature": setting(0.5, LABELS),
    "prm.labels.top_p": setting(0.9, LABELS),
    # the PRM
    "prm.dataset.source": fixed("gsm8k", "llemma"),
    "prm.dataset.path": llemma("other/Math-Shepherd", PRM),
    "prm.dataset.split": llemma("validation", PRM),
    "prm.dataset.subset": llemma("x", PRM),
    "prm.dataset.limit": llemma(100, PRM),
    "prm.heldout.source": fixed("math500", "llemma"),
    "prm.heldout.path": llemma("other/heldout", PRM),
    "prm.heldout.split": llemma("validation", PRM),
    "prm.heldout.subset": llemma("x", PRM),
    "prm.heldout.limit": llemma(100, PRM),
    "prm.init_from": setting("L", PRM),
    # an oracle: the evaluations read it, and the report names it
    "prm.kind": oracle("oracle", *D_EVAL, REPORT, prm__oracle__auc=1.0),
    "prm.oracle.auc": oracle(0.8, *D_EVAL, REPORT),
    "prm.oracle.seed": oracle(1, *D_EVAL, REPORT),
    # free reads: no model's cost is read, so S's training is no input of L's evaluation
    "prm.oracle.flops": oracle("zero", *D_EVAL, REPORT),
    "prm.label": setting("hard", PRM),
    "prm.good_token": setting(" =", PRM),
    "prm.bad_token": setting(" *", PRM),
    "prm.max_steps": setting(500, PRM),
    "prm.per_device_batch_size": setting(16, PRM),
    "prm.learning_rate": setting(5e-4, PRM),
    "prm.warmup_steps": setting(5, PRM),
    "prm.max_length": setting(120, PRM),
    "prm.batch_size": speed(7),
    "prm.cache_bytes": speed(0),
    "prm.training.gradient_accumulation_steps": setting(2, PRM),
    "prm.training.lr_scheduler": setting("linear", PRM),
    "prm.training.weight_decay": setting(0.1, PRM),
    "prm.training.num_processes": setting(2, PRM),
    "prm.training.num_nodes": setting(2, PRM, prm__training__hostfile=HOSTFILE),
    "prm.training.hostfile": speed(
        OTHER_HOSTFILE,
        context={"prm__training__num_nodes": 2, "prm__training__hostfile": HOSTFILE},
    ),
    "prm.training.deepspeed": setting("deepspeed/zero3_offload.json", PRM),
    "prm.training.bf16": setting(True, PRM),
    "prm.training.use_cpu": setting(False, PRM),
    "prm.training.threads_per_process": setting(1, PRM),
    "prm.training.logging_steps": speed(1),
    # evaluation
    "evaluation.strategies": setting(["greedy", "majority_vote"], *D_EVAL),
    "evaluation.budgets": setting([1, 2, 4, 8, 16], *D_EVAL),
    "evaluation.seed": setting(99, *D_EVAL),
    "evaluation.limit": setting(100, *D_EVAL),
    "evaluation.flops.paper_params": setting("non_embedding", *D_EVAL),
    "evaluation.aggregation": setting("min", *D_EVAL),
    "evaluation.search.budgets": setting(
        {"rebase": [4, 8], "mcts": [8, 16], "beam_search": [4, 8, 16]}, *D_EVAL
    ),
    "evaluation.search.balance_temperature": setting(0.1, *D_EVAL),
    "evaluation.search.exploration": setting(2.0, *D_EVAL),
    "evaluation.search.beam_width": setting(2, *D_EVAL),
    "evaluation.search.max_depth": setting(6, *D_EVAL),
    "evaluation.search.max_step_tokens": setting(12, *D_EVAL),
    "evaluation.search.limit": setting(40, *D_EVAL),
    # analysis and the report
    "analysis.fit_fraction": setting(0.5, REPORT),
    "analysis.bootstrap": setting(100, REPORT),
    "analysis.seed": setting(3, REPORT),
    "analysis.easy_levels": setting([1], REPORT),
    "analysis.flops_per_decade": setting(4, REPORT),
    # tracking: where the W&B runs go, settled when a run starts
    "tracking.project": speed("other", base="llemma"),
    "tracking.entity": speed("me", base="llemma"),
    "tracking.mode": speed("offline", base="llemma"),
    # execution: where the shards run, never what they write
    "execution.engine": speed("ray"),
    "execution.ray.address": speed("auto"),
    "execution.ray.shards": speed(8),
    "execution.ray.num_cpus_per_shard": speed(4),
    "execution.ray.num_gpus_per_shard": speed(
        2, base="llemma", context={"execution.engine": "ray"}
    ),
    # retries: how often a failed stage is tried again, never what it writes
    **{
        f"retries.{stage}.{field}": speed(value)
        for stage in stages.STAGES
        for field, value in (("count", 3), ("delay_seconds", 0.0))
    },
}


def config_fields(model: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every leaf field of the config's models, dotted (a list's items as `.0.`)."""
    out = []
    for name, info in model.model_fields.items():
        sub = _model_in(info.annotation)
        if sub is None:
            out.append(prefix + name)
        else:
            item = ".0." if "list[" in str(info.annotation) else "."
            out += config_fields(sub, prefix + name + item)
    return out


def declared_speed_settings() -> set[str]:
    out = set()
    for name, value in stages.EVALUATION_SPEED_SETTINGS.items():
        subs = [f"generation.{name}.{s}" for s in value] if isinstance(value, set) else []
        out.update(subs or [f"generation.{name}"])
    out.update(f"prm.{name}" for name in stages.PRM_SPEED_SETTINGS)
    for section in ("sft", "prm.training"):
        out.update(f"{section}.{name}" for name in stages.TRAINING_SPEED_SETTINGS)
    out.update(f for f in config_fields() if f.split(".")[0] in stages.RUN_SECTIONS)
    return out


def apply(raw: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[int(leaf) if isinstance(node, list) else leaf] = value


def make(base: str, changes: dict, hostfiles: dict[str, Path]) -> ExperimentConfig:
    raw = copy.deepcopy(BASES[base])
    for name, value in changes.items():
        placeholder = isinstance(value, str) and value in hostfiles
        apply(raw, name, str(hostfiles[value]) if placeholder else value)
    return parse_config(raw, base_dir=CONFIGS)


@pytest.fixture(scope="module")
def hostfile(tmp_path_factory) -> dict[str, Path]:
    """The hostfiles the rows name, by their placeholder."""
    folder = tmp_path_factory.mktemp("hosts")
    out = {}
    for i, placeholder in enumerate((HOSTFILE, OTHER_HOSTFILE)):
        out[placeholder] = folder / f"hostfile{i}"
        out[placeholder].write_text(f"node{i} slots=8\nnode{i + 2} slots=8\n")
    return out


def test_every_config_field_has_a_row():
    assert sorted(TABLE) == sorted(config_fields())


def test_the_speed_rows_are_the_declared_speed_settings():
    assert {name for name, row in TABLE.items() if row.kind == "speed"} == (
        declared_speed_settings()
    )


@pytest.mark.parametrize("name", sorted(TABLE))
def test_a_setting_changes_the_keys_of_exactly_the_stages_it_can_change(name, hostfile):
    row = TABLE[name]
    before = make(row.base, row.context, hostfile)
    if row.kind == "fixed":  # the only value the config takes: nothing to key on
        with pytest.raises(ConfigError, match="must be math_shepherd"):
            make(row.base, {name: row.value}, hostfile)
        return
    after = make(row.base, {**row.context, name: row.value, **row.also}, hostfile)
    assert after != before, "the row's value must be a change"
    old, new = plan(before).all(), plan(after).all()
    assert len(old) == len(new)
    # A renamed policy renames its artifacts: artifacts compare by their place in the plan.
    changed = {a.name for a, b in zip(old, new, strict=True) if a.key != b.key}
    assert set(INPUTS[row.base]) == {a.name for a in old}
    assert changed == downstream(set(row.keys), INPUTS[row.base])
    if row.kind == "place":
        assert plan(after).root != plan(before).root


def test_prm_training_settings_given_as_the_sft_section_has_them_key_alike(hostfile):
    raw = BASES["default"]
    inherited = {
        f"prm.training.{k}": raw["sft"].get(k, v)
        for k, v in {"num_processes": 2, "threads_per_process": 1, "lr_scheduler": "cosine"}.items()
    }
    explicit = make("default", inherited, hostfile)
    assert [a.key for a in plan(explicit).all()] == [
        a.key for a in plan(make("default", {}, hostfile)).all()
    ]


def test_the_prm_training_section_leaves_the_default_experiments_as_they_were():
    """No prm.training in either shipped config: PRM training reads the sft section's."""
    for base in ("default", "llemma"):
        config = parse_config(copy.deepcopy(BASES[base]), base_dir=CONFIGS)
        training = config.prm_training
        for name in type(training).model_fields:
            assert getattr(training, name) == getattr(config.sft, name), (base, name)


def test_prm_training_reads_what_its_key_holds(hostfile):
    """The spec PRM training runs with takes each setting from where the key takes it."""
    changes = {"prm.training.weight_decay": 0.1, "sft.gradient_accumulation_steps": 3}
    config = make("llemma", changes, hostfile)
    spec = prm_spec(config, "init", Path("train.jsonl"), None, Path("out"), [])
    settings = plan(config).train_prm.material["settings"]
    keyed = {**settings["prm"], **settings["prm"]["training"]}
    assert (spec["weight_decay"], spec["gradient_accumulation_steps"]) == (0.1, 3)
    for name in (
        "gradient_accumulation_steps",
        "lr_scheduler",
        "weight_decay",
        "bf16",
        "use_cpu",
        "label",
        "good_token",
        "bad_token",
        "max_length",
        "max_steps",
        "per_device_batch_size",
        "learning_rate",
        "warmup_steps",
    ):
        assert spec[name] == keyed[name], name
    assert spec["threads_per_rank"] == keyed["threads_per_process"]
    assert (spec["seed"], spec["format"]) == (settings["seed"], settings["data"]["format"])
    assert json.loads(Path(spec["deepspeed_config"]).read_text()) == settings["deepspeed"]


def test_the_shipped_configs_key_their_stages_on_the_settings_they_always_had():
    """The settings and input names of every stage of the shipped configs, as recorded in
    tests/fixtures/key_settings.json: a new field must leave them alone at its default, so that
    finished runs stay reusable. A change here is deliberate: it retrains the default."""
    recorded = json.loads((Path(__file__).parent / "fixtures" / "key_settings.json").read_text())
    now = {}
    for name in ("default", "llemma"):
        shipped = read_yaml(CONFIGS / f"{name}.yaml")
        for artifact in plan(parse_config(shipped, base_dir=CONFIGS)).all():
            material = artifact.material
            now[f"{name}:{artifact.name}"] = {
                "settings": material["settings"],
                "inputs": sorted(material["inputs"]),
            }
    assert now == recorded
