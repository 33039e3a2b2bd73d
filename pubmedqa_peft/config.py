"""Typed, frozen configuration loaded from ``params.yaml``.

Every section of ``params.yaml`` maps to one pydantic model here. Unknown keys, wrong
types and bad values are rejected before a stage does any work, with a message that
names the key and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML, YAMLError

from pubmedqa_peft import paths

PQAL_URL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/ori_pqal.json"
PQAL_SHA256 = "8b3276be8942ebbd77f3ddcda12c1749bf0e490045a736fd8438ee40cf37a41d"
TEST_IDS_URL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/test_ground_truth.json"
TEST_IDS_SHA256 = "939fe566f09017d13b1ca64d2ddfee0bc2374b366048152997669cccedc44d51"

METHODS = ("prompt", "prefix", "lora")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ConfigError(ValueError):
    """A value in ``params.yaml`` is missing, unknown or invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ModelConfig(_Section):
    """Shared ``model`` section: which base model, how long its inputs, where it runs."""

    name: str = "google/flan-t5-small"
    max_source_length: Annotated[int, Field(ge=32)] = 512
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: NonNegativeInt = 0


class IngestConfig(_Section):
    """``ingest`` section: where the raw PQA-L file comes from and its expected hash."""

    source: str = PQAL_URL
    sha256: Sha256 = PQAL_SHA256
    timeout_s: PositiveFloat = 30.0


class CleanConfig(_Section):
    """``clean`` section: which labels are kept."""

    keep_labels: tuple[Literal["yes", "no", "maybe"], ...] = ("yes", "no")

    @field_validator("keep_labels")
    @classmethod
    def _two_distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if sorted(set(v)) != ["no", "yes"]:
            raise ValueError("the yes/no task needs exactly ['yes', 'no']")
        return v


class SplitFractions(_Section):
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


class SplitConfig(_Section):
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


class TrainConfig(_Section):
    """Shared ``train`` section, read by every ``train_<method>`` stage."""

    epochs: PositiveFloat = 3
    batch_size: PositiveInt = 8
    eval_batch_size: PositiveInt = 16
    gradient_accumulation_steps: PositiveInt = 1
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.06
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    seed: NonNegativeInt = 42
    logging_steps: PositiveInt = 10
    max_train_examples: PositiveInt | None = None


class PromptTuningConfig(_Section):
    """``train_prompt`` section: soft prompt prepended to the encoder input."""

    lr: PositiveFloat = 0.3
    num_virtual_tokens: PositiveInt = 20
    init: Literal["text", "random"] = "text"
    init_text: str = "Answer the biomedical research question with yes or no."


class PrefixTuningConfig(_Section):
    """``train_prefix`` section: trainable key/value prefixes (PEFT prefix tuning)."""

    lr: PositiveFloat = 0.01
    num_virtual_tokens: PositiveInt = 20
    prefix_projection: bool = False
    encoder_hidden_size: PositiveInt = 512


class LoraConfig(_Section):
    """``train_lora`` section: low-rank adapters on attention projections."""

    lr: PositiveFloat = 1e-3
    r: PositiveInt = 8
    alpha: PositiveFloat = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: tuple[str, ...] = ("q", "v")

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("name at least one module, e.g. ['q', 'v']")
        return v


class EvaluateConfig(_Section):
    """``evaluate`` section: scoring, baselines and statistics."""

    batch_size: PositiveInt = 16
    fewshot_k: tuple[PositiveInt, ...] = (3, 5)
    tau: Annotated[float, Field(ge=0.5, le=1)] = 0.7
    tau_grid_step: Annotated[float, Field(gt=0, le=0.5)] = 0.01
    target_accuracy: Probability = 0.8
    bootstrap: PositiveInt = 1000
    seed: NonNegativeInt = 42
    latency_samples: PositiveInt = 20
    latency_warmup: NonNegativeInt = 3
    calibration_bins: Annotated[int, Field(ge=2)] = 10


class PlotConfig(_Section):
    """``plot`` section: figures and qualitative reports."""

    examples_per_method: PositiveInt = 3
    context_chars: PositiveInt = 300
    dpi: Annotated[int, Field(ge=50, le=600)] = 120


class Params(_Section):
    """All of ``params.yaml``."""

    model: ModelConfig = ModelConfig()
    ingest: IngestConfig = IngestConfig()
    clean: CleanConfig = CleanConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    train_prompt: PromptTuningConfig = PromptTuningConfig()
    train_prefix: PrefixTuningConfig = PrefixTuningConfig()
    train_lora: LoraConfig = LoraConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    plot: PlotConfig = PlotConfig()

    def method(self, name: str) -> PromptTuningConfig | PrefixTuningConfig | LoraConfig:
        """Return the section of one PEFT method (``prompt``, ``prefix`` or ``lora``)."""
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
        return getattr(self, f"train_{name}")


def _format_error(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid parameters:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            model: type[BaseModel] = Params
            for p in parent:
                field = model.model_fields.get(str(p))
                ann = field.annotation if field else None
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    model = ann
            msg = f"unknown key; allowed keys here: {', '.join(model.model_fields)}"
        elif "input" in e and not isinstance(e["input"], dict) and e["type"] != "missing":
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


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
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


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
