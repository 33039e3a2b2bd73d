"""Typed, frozen configuration loaded from ``params.yaml``.

Every section of ``params.yaml`` maps to one pydantic model. The shared sections are
declared here; each training method's ``train_<name>`` section is declared with the
method in :mod:`pubmedqa_peft.methods.registry`, and :func:`params_model` assembles the
whole document from both, so a method registered there is validated here with no other
change. Unknown sections and keys, wrong types and bad values (booleans where a number
is expected, infinities, NaN) are rejected before a stage does any work, with a message
that names the key and what is allowed.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML, YAMLError

from pubmedqa_peft import paths
from pubmedqa_peft.task import Task

PQAL_URL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/ori_pqal.json"
PQAL_SHA256 = "8b3276be8942ebbd77f3ddcda12c1749bf0e490045a736fd8438ee40cf37a41d"
TEST_IDS_URL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/test_ground_truth.json"
TEST_IDS_SHA256 = "939fe566f09017d13b1ca64d2ddfee0bc2374b366048152997669cccedc44d51"


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode reads `true` as 1 and 1.0: a typo'd flag would silently become a count.
    if isinstance(value, bool):
        raise ValueError("a number is expected, not a boolean")
    return value


Int = Annotated[int, BeforeValidator(_not_a_bool)]
"""An integer that refuses booleans."""
Float = Annotated[float, BeforeValidator(_not_a_bool), Field(allow_inf_nan=False)]
"""A finite float that refuses booleans."""
PositiveInt = Annotated[Int, Field(gt=0)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
Probability = Annotated[Float, Field(ge=0, le=1)]
LearningRate = Annotated[Float, Field(gt=0, le=10)]
"""A learning rate: positive; above 10 is a typo even for prompt tuning (PEFT's examples use <= 1)."""
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
"""What a precision setting means on a device (``pubmedqa_peft.modeling.resolve_precision``),
as training, scoring and ``run.json`` record it."""
Precision = Literal[("auto", *get_args(ResolvedPrecision))]  # type: ignore[valid-type]
"""Numeric precision of training or scoring: ``auto`` is bf16 where the device has it
natively (recent CUDA), fp16 with loss scaling on older CUDA, fp32 on CPU."""


class ConfigError(ValueError):
    """A value in ``params.yaml`` is missing, unknown or invalid."""


class Section(BaseModel):
    """Base of every ``params.yaml`` section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ModelConfig(Section):
    """Shared ``model`` section: which base model, how long its inputs, where it runs."""

    name: str = "google/flan-t5-small"
    max_source_length: Annotated[Int, Field(ge=32)] = 512
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: Annotated[Int, Field(ge=0, le=1024)] = 0
    chat_template: Literal["auto", "none"] = "auto"


class IngestConfig(Section):
    """``ingest`` section: where the raw PQA-L file comes from and its expected hash."""

    source: str = PQAL_URL
    sha256: Sha256 = PQAL_SHA256
    timeout_s: PositiveFloat = 30.0


class TaskConfig(Section):
    """``task`` section: the answers a question can have (read by clean and every later stage)."""

    labels: tuple[Literal["yes", "no", "maybe"], ...] = ("yes", "no")

    @field_validator("labels")
    @classmethod
    def _a_known_task(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or set(v) not in ({"yes", "no"}, {"yes", "no", "maybe"}):
            raise ValueError("must be [yes, no] (the binary task) or [yes, no, maybe] (the official three-label task)")
        return v

    @property
    def task(self) -> Task:
        """The label set in column order."""
        return Task.of(self.labels)


class SplitFractions(Section):
    """Fractions of the stratified split; they must sum to 1."""

    train: Probability = 0.8
    val: Probability = 0.1
    test: Probability = 0.1

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class SplitConfig(Section):
    """``split`` section: how cleaned records are divided into train/val/test."""

    strategy: Literal["stratified", "official"] = "stratified"
    fractions: SplitFractions = SplitFractions()
    seed: NonNegativeInt = 42
    official_test_ids: str = TEST_IDS_URL
    official_test_ids_sha256: Sha256 = TEST_IDS_SHA256

    @model_validator(mode="after")
    def _stratified_needs_all_splits(self) -> SplitConfig:
        f = self.fractions
        if self.strategy == "stratified" and min(f.train, f.val, f.test) <= 0:
            raise ValueError("every stratified split fraction must be > 0")
        return self


class TrainConfig(Section):
    """Shared ``train`` section, read by every ``train_<method>`` stage."""

    epochs: PositiveFloat = 3
    batch_size: PositiveInt = 8
    eval_batch_size: PositiveInt = 16
    gradient_accumulation_steps: PositiveInt = 1
    warmup_ratio: Annotated[Float, Field(ge=0, lt=1)] = 0.06
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0
    seeds: Annotated[tuple[NonNegativeInt, ...], Field(min_length=1)] = (42,)
    logging_steps: PositiveInt = 10
    max_train_examples: PositiveInt | None = None
    max_steps: PositiveInt | None = None
    eval_steps: PositiveInt | None = None
    processes: Annotated[Int, Field(ge=1, le=64)] = 1
    precision: Precision = "auto"
    model_dropout: Annotated[Float, Field(ge=0, lt=1)] | None = None

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {list(v)}")
        return v

    @property
    def seed(self) -> int:
        """The first seed: the run whose model is served, plotted and reported in full."""
        return self.seeds[0]


class EvaluateConfig(Section):
    """``evaluate`` section: scoring, baselines and statistics."""

    batch_size: PositiveInt = 16
    fewshot_k: tuple[PositiveInt, ...] = (3, 5)
    tau: Annotated[Float, Field(ge=0.5, le=1)] = 0.7
    tau_grid_step: Annotated[Float, Field(gt=0, le=0.5)] = 0.01
    target_accuracy: Probability = 0.8
    bootstrap: PositiveInt = 1000
    seed: NonNegativeInt = 42
    latency_samples: PositiveInt = 20
    latency_warmup: NonNegativeInt = 3
    calibration_bins: Annotated[Int, Field(ge=2)] = 10
    precision: Precision = "auto"

    @field_validator("fewshot_k")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        # fewshot_k3 twice would be scored twice and written under one name.
        if len(set(v)) != len(v):
            raise ValueError(f"list each K once, got {list(v)}")
        return v


class SearchRange(Section):
    """One hyperparameter's search range in ``tune.space``: ``low``/``high`` (optionally log-scale) or ``choices``."""

    low: Float | None = None
    high: Float | None = None
    log: bool = False
    integer: bool = False
    # Strict: a choice keeps its YAML type (4 stays an int for train_lora.r, not 4.0).
    choices: tuple[StrictInt | StrictFloat | StrictStr | StrictBool, ...] | None = None

    @model_validator(mode="after")
    def _a_range_or_choices(self) -> SearchRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.integer:
                raise ValueError("give either choices or low/high (with log, integer), not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low:g}, high={self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low:g}")
        if self.integer and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("an integer range needs whole-number low and high")
        return self


TUNE_OBJECTIVES = ("macro_f1", "accuracy", "roc_auc", "ece")
"""Metrics of ``metrics/eval.json``'s ``val`` block a search can optimise (``ece`` is minimised)."""


class TuneConfig(Section):
    """``tune`` section: the hyperparameter search of ``python -m pubmedqa_peft.tune`` (read by no stage)."""

    storage: str = "sqlite:///.tune/optuna.db"
    objective: Literal[TUNE_OBJECTIVES] = "macro_f1"  # type: ignore[valid-type]
    seed: NonNegativeInt = 42
    space: dict[str, dict[str, SearchRange]] = Field(default_factory=dict)

    @field_validator("storage")
    @classmethod
    def _no_password(cls, v: str) -> str:
        # params.yaml is committed and shown by `dvc params diff`: a password must not live there.
        if re.match(r"^[a-z0-9+]+://[^/@]*:[^/@]*@", v):
            raise ValueError(
                "holds a password: keep it out of params.yaml; pass it with --storage or the "
                "PUBMEDQA_TUNE_STORAGE environment variable"
            )
        return v

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Whether the objective is maximised (all but calibration error)."""
        return "minimize" if self.objective == "ece" else "maximize"


class PlotConfig(Section):
    """``plot`` section: figures and qualitative reports."""

    examples_per_method: PositiveInt = 3
    context_chars: PositiveInt = 300
    dpi: Annotated[Int, Field(ge=50, le=600)] = 120


class MethodSection(Section):
    """Base of every ``train_<method>`` section: what all training methods have."""

    lr: LearningRate
    """Peak learning rate (linear warm-up, then linear decay)."""
    weight_decay: Annotated[Float, Field(ge=0)] | None = None
    """AdamW weight decay of this method; None (the default) uses ``train.weight_decay``."""


class Params(Section):
    """All of ``params.yaml``: the shared sections declared here.

    The model that :func:`parse_params` validates with is a subclass made by
    :func:`params_model`, which adds one ``train_<name>`` field per registered method;
    read those sections with :meth:`method`.
    """

    model: ModelConfig = ModelConfig()
    ingest: IngestConfig = IngestConfig()
    task: TaskConfig = TaskConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    plot: PlotConfig = PlotConfig()
    tune: TuneConfig = TuneConfig()

    @model_validator(mode="after")
    def _tune_space_names_real_keys(self) -> Params:
        # A misspelt key in the search space would make every trial the same run.
        for method, space in self.tune.space.items():
            section = getattr(self, method_section(method), None)
            if not isinstance(section, Section):
                allowed = [f.removeprefix("train_") for f in type(self).model_fields if f.startswith("train_")]
                raise ValueError(f"tune.space.{method}: unknown method; allowed: {', '.join(allowed)}")
            for key in space:
                head, _, tail = key.partition(".")
                target = getattr(self, head, None) if head in type(self).model_fields else None
                if not isinstance(target, Section) or tail not in type(target).model_fields:
                    example = f"{method_section(method)}.lr"
                    raise ValueError(
                        f"tune.space.{method}.{key}: not a params.yaml key; write section.key, e.g. {example}"
                    )
                if head.startswith("train_") and head != method_section(method):
                    raise ValueError(
                        f"tune.space.{method}.{key}: another method's section; {method} reads {method_section(method)}"
                    )
        return self

    def method(self, name: str) -> Section:
        """Return the ``train_<name>`` section of one registered training method.

        Raises:
            ConfigError: If no method of that name is registered.
        """
        section = getattr(self, method_section(name), None)
        if not isinstance(section, Section):
            allowed = [f.removeprefix("train_") for f in type(self).model_fields if f.startswith("train_")]
            raise ConfigError(f"unknown method {name!r}; allowed: {', '.join(allowed)}")
        return section


def method_section(name: str) -> str:
    """The ``params.yaml`` section of a training method (``train_<name>``)."""
    return f"train_{name}"


def params_model() -> type[Params]:
    """The model of the whole ``params.yaml``: :class:`Params` plus every registered method's section.

    Built from :data:`pubmedqa_peft.methods.sections.SECTIONS` as it is now (and cached
    for that state), which holds every registered method's section: registering a method
    makes its section valid and required to be well-formed, with its defaults when absent.
    """
    # Imported here, not at the top: the method sections derive from Section above.
    from pubmedqa_peft.methods.sections import SECTIONS

    return _params_model(tuple(SECTIONS.items()))


@functools.cache
def _params_model(sections: tuple[tuple[str, type[Section]], ...]) -> type[Params]:
    fields: dict[str, Any] = {method_section(name): (section, section()) for name, section in sections}
    return create_model("Params", __base__=Params, __doc__=Params.__doc__, **fields)


MOVED: dict[tuple[str, ...], str] = {
    ("clean",): "clean.keep_labels is now task.labels",
    ("train", "seed"): "train.seed is now train.seeds, a list (e.g. [42])",
}
"""Keys of older ``params.yaml`` files, and where their setting lives now."""


def _format_error(source: str, err: ValidationError, root: type[BaseModel]) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            model: type[BaseModel] = root
            for p in parent:
                field = model.model_fields.get(str(p))
                ann = field.annotation if field else None
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    model = ann
            what = "section" if len(parent) == 0 else "key"
            msg = f"unknown {what}; allowed {what}s here: {', '.join(model.model_fields)}"
            if e["loc"] in MOVED:
                msg = f"{MOVED[e['loc']]}; {msg}"
        elif "input" in e and not isinstance(e["input"], dict) and e["type"] != "missing":
            msg = f"{msg} (got {e['input']!r})"
        if not e["loc"] and e["type"] == "value_error":
            # A check across sections names its own keys.
            problems.append(msg.removeprefix("Value error, "))
            continue
        problems.append(f"{key}: {msg}")
    # One line, as every error of a stage: the problems separated by semicolons.
    return f"{source}: invalid parameters: {'; '.join(problems)}"


def parse_params(data: object, source: str = "params") -> Params:
    """Validate a mapping (as read from YAML) into :class:`Params`.

    Args:
        data: The parsed YAML document.
        source: Name of where the data came from, used in error messages.

    Returns:
        The frozen, validated parameters.

    Raises:
        ConfigError: On unknown keys, wrong types or bad values, naming each key.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    model = params_model()
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err, model)) from None


def load_params(path: Path | str = paths.PARAMS) -> Params:
    """Read and validate ``params.yaml``.

    Args:
        path: The YAML file to read.

    Returns:
        The frozen, validated parameters.

    Raises:
        ConfigError: If the file is missing, not YAML, or has invalid values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root)") from None
    # YAML 1.2, as DVC reads and writes params.yaml (`dvc exp run -S`): in YAML 1.1
    # an unquoted `yes` would become a boolean.
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data, str(path))
