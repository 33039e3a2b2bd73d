"""Every training method, declared once.

A :class:`Method` says what the method is called, how it is shown (label, colour), which
``params.yaml`` section configures it (``train_<name>``), how it turns the base model
into the model that trains, how its base model must be loaded (full precision, 4-bit
or 8-bit) and what it saves (a PEFT adapter or the whole model). Everything else derives
from :data:`REGISTRY`: params validation (:func:`pubmedqa_peft.config.params_model`),
the ``python -m stages.train <method>`` entry point, the evaluate stage, plots and
reports, the best-experiment command and the benchmark.

Adding a method is one :func:`register` call (one entry below, with its section class in
:mod:`~pubmedqa_peft.methods.sections`), its section in ``params.yaml`` and one
``train_<name>`` stage in ``dvc.yaml`` (three lines: the anchor with the method's name).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pubmedqa_peft.config import ConfigError, MethodSection
from pubmedqa_peft.methods import full, peft, sections

if TYPE_CHECKING:
    import torch

Builder = Callable[[Any, Any, str], "torch.nn.Module"]
"""``build(base_model, section, model_name) -> model to train`` (the base may be returned unwrapped)."""


@dataclass(frozen=True)
class BaseLoading:
    """How a method needs its base model loaded."""

    quantize: sections.Quantization = "none"
    """``none``, ``4bit`` (NF4 with double quantization) or ``8bit`` (LLM.int8), via bitsandbytes."""
    compute_dtype: str = "float32"
    """Dtype the quantized layers compute in (ignored without quantization)."""


def _full_precision(section: Any) -> BaseLoading:
    return BaseLoading()


@dataclass(frozen=True)
class Method:
    """One training method: everything the pipeline needs to know about it."""

    name: str
    """Short name: the stage is ``train_<name>``, outputs ``models/<name>``, metrics keys ``<split>.<name>.*``."""
    label: str
    """Name in legends and tables (``LoRA``)."""
    color: str
    """Its colour in every figure (hex)."""
    section: type[MethodSection]
    """The pydantic model of its ``train_<name>`` section (defaults included)."""
    build: Builder
    """Turns the loaded base model into the model that trains."""
    adapts: str
    """What trains, in a few words (for the README and reports)."""
    saves: Literal["adapter", "model"] = "adapter"
    """``adapter``: a PEFT adapter applied to the base model; ``model``: the whole model."""
    base_loading: Callable[[Any], BaseLoading] = field(default=_full_precision)
    """How its base model is loaded, given its section."""


REGISTRY: dict[str, Method] = {}
"""Registered methods by name, in display order."""

_NAME = re.compile(r"^[a-z][a-z0-9]*$")


def register(method: Method) -> Method:
    """Add a method to :data:`REGISTRY`.

    Its params section becomes part of ``params.yaml`` (:data:`sections.SECTIONS`).

    Args:
        method: The method; its name must be new, lower-case letters and digits.

    Returns:
        The method.

    Raises:
        ValueError: If the name is taken, not a plain lower-case word, or declared in
            :data:`sections.SECTIONS` with another section.
    """
    if not _NAME.match(method.name):
        raise ValueError(f"method name {method.name!r} must be lower-case letters and digits, starting with a letter")
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    if sections.SECTIONS.setdefault(method.name, method.section) is not method.section:
        raise ValueError(f"method {method.name!r}: sections.SECTIONS declares another section for it")
    REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method and its section (tests register throwaway methods and remove them again)."""
    REGISTRY.pop(name, None)
    sections.SECTIONS.pop(name, None)


def names() -> tuple[str, ...]:
    """Names of the registered methods, in display order."""
    return tuple(REGISTRY)


def get(name: str) -> Method:
    """The registered method called ``name``.

    Raises:
        ConfigError: If there is none, listing the registered ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(REGISTRY)}") from None


def _lora_loading(section: sections.LoraParams) -> BaseLoading:
    return BaseLoading(section.quantize, section.compute_dtype)


# Colours: the Okabe & Ito colour-blind-safe palette, as in pubmedqa_peft.plotting (which
# keeps grey for base, vermillion for TF-IDF and purples for few-shot).
register(
    Method(
        name="prompt",
        label="prompt tuning",
        color="#E69F00",  # orange
        section=sections.PromptTuningParams,
        build=peft.prompt_tuning,
        adapts="soft-prompt vectors prepended to the encoder input",
    )
)
register(
    Method(
        name="prefix",
        label="prefix tuning",
        color="#0072B2",  # blue
        section=sections.PrefixTuningParams,
        build=peft.prefix_tuning,
        adapts="key/value prefixes in every decoder layer's attention",
    )
)
register(
    Method(
        name="lora",
        label="LoRA",
        color="#009E73",  # bluish green
        section=sections.LoraParams,
        build=peft.lora,
        adapts="low-rank updates of attention projections (DoRA, QLoRA as options)",
        base_loading=_lora_loading,
    )
)
register(
    Method(
        name="ia3",
        label="IA3",
        color="#56B4E9",  # sky blue
        section=sections.IA3Params,
        build=peft.ia3,
        adapts="vectors rescaling attention keys/values and feed-forward activations",
    )
)
register(
    Method(
        name="full",
        label="full fine-tuning",
        color="#000000",  # black: the reference the PEFT methods approach
        section=sections.FullParams,
        build=full.full_model,
        adapts="every weight",
        saves="model",
    )
)
