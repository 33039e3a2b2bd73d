"""The ``params.yaml`` section of every training method, by method name.

Kept apart from the code that builds each method (:mod:`~pubmedqa_peft.methods.peft`,
:mod:`~pubmedqa_peft.methods.full`) because every stage validates the whole
``params.yaml`` (:func:`pubmedqa_peft.config.params_model` reads :data:`SECTIONS`), and
a data stage should not rerun when training code changes. The registry
(:mod:`~pubmedqa_peft.methods.registry`) declares each method with its section from here;
:func:`~pubmedqa_peft.methods.registry.register` adds the section of a method registered
later.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from pubmedqa_peft.config import Float, LearningRate, MethodSection, PositiveInt

AUTO = "auto"
"""``target_modules`` / ``feedforward_modules`` value: PEFT's default for the architecture."""

ModuleNames = Literal["auto"] | tuple[str, ...]
"""``auto`` or a list of module names (matched like PEFT does: the name or its last parts)."""

Quantization = Literal["none", "4bit", "8bit"]

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _module_names(v: Any, allow_empty: bool = False) -> Any:
    if v == AUTO:
        return v
    if not v and not allow_empty:
        raise ValueError("name at least one module (e.g. ['q', 'v']), or write auto")
    bad = [m for m in v if not isinstance(m, str) or not _MODULE_NAME.match(m)]
    if bad:
        raise ValueError(f"not module names: {bad}")
    return v


class PromptTuningParams(MethodSection):
    """``train_prompt`` section: soft prompt prepended to the encoder input."""

    lr: LearningRate = 0.3
    num_virtual_tokens: PositiveInt = 20
    init: Literal["text", "random"] = "text"
    init_text: str = "Answer the biomedical research question with yes or no."

    @field_validator("init_text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty (it initialises the soft prompt); or set init: random")
        return v


class PrefixTuningParams(MethodSection):
    """``train_prefix`` section: trainable key/value prefixes (PEFT prefix tuning)."""

    lr: LearningRate = 0.01
    num_virtual_tokens: PositiveInt = 20
    prefix_projection: bool = False
    encoder_hidden_size: PositiveInt = 512


class LoraParams(MethodSection):
    """``train_lora`` section: low-rank adapters on linear layers; DoRA and QLoRA as options."""

    lr: LearningRate = 1e-3
    r: PositiveInt = 8
    alpha: Annotated[Float, Field(gt=0)] = 16
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.05
    target_modules: ModuleNames = AUTO
    use_dora: bool = False
    quantize: Quantization = "none"
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: ModuleNames) -> ModuleNames:
        return _module_names(v)


class IA3Params(MethodSection):
    """``train_ia3`` section: learned rescaling vectors (PEFT IA3)."""

    lr: LearningRate = 3e-3
    target_modules: ModuleNames = AUTO
    feedforward_modules: ModuleNames = AUTO

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: ModuleNames) -> ModuleNames:
        return _module_names(v)

    @field_validator("feedforward_modules")
    @classmethod
    def _feedforward_names(cls, v: ModuleNames) -> ModuleNames:
        return _module_names(v, allow_empty=True)  # IA3 without any feed-forward scaling is valid


class FullParams(MethodSection):
    """``train_full`` section: full fine-tuning of every weight."""

    lr: LearningRate = 1e-4
    weight_decay: Annotated[Float, Field(ge=0)] | None = 0.01


SECTIONS: dict[str, type[MethodSection]] = {
    "prompt": PromptTuningParams,
    "prefix": PrefixTuningParams,
    "lora": LoraParams,
    "ia3": IA3Params,
    "full": FullParams,
}
"""Each method's section (``train_<name>``), in registry order."""
