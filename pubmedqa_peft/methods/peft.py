"""The PEFT methods: their ``params.yaml`` sections and how each wraps the base model.

Two PEFT defaults would mislead on T5 and are overridden here:

* Prompt tuning on a seq2seq model defaults to ``num_transformer_submodules=2``,
  which also prepends soft tokens to the decoder and doubles the reported footprint.
  We use 1: the soft prompt is prepended to the encoder input only.
* Prefix tuning takes ``token_dim`` from ``d_model`` (512 on flan-t5-small), but T5's
  attention works in ``num_heads x d_kv`` (6 x 64 = 384) and crashes otherwise; and it
  takes ``num_layers`` from the encoder. On T5, PEFT's prefix tuning prefixes the
  *decoder* only: every decoder layer's self-attention and, with the same tensors, its
  cross-attention get the learned keys/values; the encoder is not adapted at all.
  ``num_transformer_submodules`` must stay 2 here: with 1, PEFT hands T5 a single cache
  and the cross-attention appends the encoder's keys to the self-attention prefix, which
  is silently wrong without padding and crashes with it (pinned by a test).

LoRA (optionally DoRA, optionally on a 4-bit or 8-bit quantized base: QLoRA) and IA3
adapt named linear layers. ``target_modules: auto`` takes PEFT's default for the
architecture (on T5: LoRA ``q``, ``v``; IA3 ``k``, ``v`` and the feed-forward output
``wo``). Named modules the model lacks are refused before any training, with the
names of the linear layers it has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pubmedqa_peft import known_warnings
from pubmedqa_peft.families import EXTRA_IA3_TARGETS, EXTRA_LORA_TARGETS
from pubmedqa_peft.methods.sections import (
    AUTO,
    IA3Params,
    LoraParams,
    ModuleNames,
    PrefixTuningParams,
    PromptTuningParams,
)
from pubmedqa_peft.stage import PipelineError

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig, PeftModel


def _task_type(model_config: Any) -> str:
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if getattr(model_config, "is_encoder_decoder", False) else TaskType.CAUSAL_LM


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """The distinct last name parts of the model's linear layers (what ``target_modules`` names).

    Args:
        model: A transformers model.

    Returns:
        Sorted names such as ``['k', 'lm_head', 'o', 'q', 'v', 'wi_0', 'wi_1', 'wo']``.
    """
    import torch

    # GPT-2's projections are transformers' Conv1D, a linear layer with transposed weights.
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if name and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D")
        }
    )


def check_modules(model: torch.nn.Module, names: ModuleNames, key: str) -> None:
    """Refuse module names that match no module of ``model``, the way PEFT matches them.

    Args:
        model: The base model.
        names: ``auto`` (always fine) or module names.
        key: The params key, named in the error (``train_lora.target_modules``).

    Raises:
        PipelineError: Naming the missing modules and the linear layers the model has.
    """
    if names == AUTO:
        return
    modules = [name for name, _ in model.named_modules() if name]
    missing = [n for n in names if not any(m == n or m.endswith(f".{n}") for m in modules)]
    if missing:
        raise PipelineError(
            f"{key}: the model ({type(model).__name__}) has no module named {', '.join(map(repr, missing))}; "
            f"its linear layers are: {', '.join(linear_layer_names(model))} (or write auto for PEFT's default)"
        )


def _modules(names: ModuleNames) -> list[str] | None:
    return None if names == AUTO else list(names)


def _model_type(base: Any) -> str:
    return getattr(base.config, "model_type", "")


def _wrap(base: torch.nn.Module, config: PeftConfig) -> PeftModel:
    from peft import get_peft_model

    try:
        with known_warnings.library_deprecations():
            return get_peft_model(base, config)
    except ValueError as err:
        # PEFT has no default target modules for this architecture (e.g. BioGPT).
        raise PipelineError(f"PEFT cannot build {config.peft_type} on {type(base).__name__}: {err}") from None


def prompt_tuning(base: torch.nn.Module, section: PromptTuningParams, model_name: str) -> PeftModel:
    """Wrap ``base`` for prompt tuning (soft tokens before the encoder input only).

    Args:
        base: The base model.
        section: ``train_prompt``.
        model_name: Where PEFT loads the tokenizer for the text initialisation.

    Returns:
        The PEFT model, only the soft prompt trainable.
    """
    from peft import PromptTuningConfig, PromptTuningInit

    init: dict[str, Any] = {"prompt_tuning_init": PromptTuningInit.RANDOM}
    if section.init == "text":
        init = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": section.init_text,
            "tokenizer_name_or_path": model_name,
        }
    config = PromptTuningConfig(
        task_type=_task_type(base.config),
        num_virtual_tokens=section.num_virtual_tokens,
        num_transformer_submodules=1,
        **init,
    )
    return _wrap(base, config)


def prefix_tuning(base: torch.nn.Module, section: PrefixTuningParams, model_name: str) -> PeftModel:
    """Wrap ``base`` for prefix tuning (key/value prefixes in every decoder layer on T5).

    Args:
        base: The base model.
        section: ``train_prefix``.
        model_name: Unused (the signature is shared by every builder).

    Returns:
        The PEFT model, only the prefixes (and their MLP, if any) trainable.
    """
    from peft import PrefixTuningConfig

    cfg = base.config
    # T5 needs its sizes spelled out (see the module docstring); for a decoder-only model
    # PEFT reads layers, heads and head size from the config itself.
    t5_sizes: dict[str, Any] = {}
    if getattr(cfg, "is_encoder_decoder", False):
        t5_sizes = {
            "num_transformer_submodules": 2,
            "num_layers": cfg.num_decoder_layers,
            "num_attention_heads": cfg.num_heads,
            "token_dim": cfg.num_heads * cfg.d_kv,
        }
    config = PrefixTuningConfig(
        task_type=_task_type(cfg),
        num_virtual_tokens=section.num_virtual_tokens,
        prefix_projection=section.prefix_projection,
        encoder_hidden_size=section.encoder_hidden_size,
        **t5_sizes,
    )
    return _wrap(base, config)


def lora(base: torch.nn.Module, section: LoraParams, model_name: str) -> PeftModel:
    """Wrap ``base`` with LoRA (or DoRA); on a quantized base, prepare it for k-bit training first.

    Args:
        base: The base model, quantized when ``section.quantize`` says so.
        section: ``train_lora``.
        model_name: Unused (the signature is shared by every builder).

    Returns:
        The PEFT model, only the low-rank matrices (and DoRA's magnitudes) trainable.
    """
    from peft import LoraConfig, prepare_model_for_kbit_training

    check_modules(base, section.target_modules, "train_lora.target_modules")
    if section.quantize != "none":
        # Freezes the base, casts the non-quantized half-precision weights to float32 and
        # turns on gradient checkpointing: QLoRA's recipe for training on a k-bit base.
        with known_warnings.library_deprecations():
            base = prepare_model_for_kbit_training(
                base, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        # Checkpointed layers recompute their forward, so there is nothing to cache while
        # training (the scoring code asks for the cache explicitly); saying so up front, in
        # every sub-model's config (T5's encoder and decoder stacks hold copies), spares
        # transformers' warning that it turns use_cache off itself.
        for module in base.modules():
            if hasattr(getattr(module, "config", None), "use_cache"):
                module.config.use_cache = False
    # auto: PEFT's default for the architecture, or ours where PEFT has none (BioGPT).
    target = _modules(section.target_modules) or EXTRA_LORA_TARGETS.get(_model_type(base))
    config = LoraConfig(
        task_type=_task_type(base.config),
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=target,
        use_dora=section.use_dora,
    )
    return _wrap(base, config)


def ia3(base: torch.nn.Module, section: IA3Params, model_name: str) -> PeftModel:
    """Wrap ``base`` with IA3: learned vectors rescaling attention keys/values and feed-forward inputs.

    With ``feedforward_modules: auto`` and explicit ``target_modules``, the feed-forward
    modules are those of PEFT's default for the architecture that are targeted (IA3
    scales a feed-forward layer's input, an attention projection's output).

    Args:
        base: The base model.
        section: ``train_ia3``.
        model_name: Unused (the signature is shared by every builder).

    Returns:
        The PEFT model, only the IA3 vectors trainable.
    """
    from peft import IA3Config
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD

    check_modules(base, section.target_modules, "train_ia3.target_modules")
    check_modules(base, section.feedforward_modules, "train_ia3.feedforward_modules")
    target = _modules(section.target_modules)
    feedforward = _modules(section.feedforward_modules)
    if target is None and feedforward is None and _model_type(base) in EXTRA_IA3_TARGETS:
        target, feedforward = EXTRA_IA3_TARGETS[_model_type(base)]  # PEFT has no default here
    if target is not None and feedforward is None:
        default = FEEDFORWARD.get(base.config.model_type, [])
        feedforward = [m for m in target if m in default]
    if target is not None and feedforward is not None and not set(feedforward) <= set(target):
        raise PipelineError(
            f"train_ia3.feedforward_modules {feedforward} must be a subset of train_ia3.target_modules {target}"
        )
    config = IA3Config(task_type=_task_type(base.config), target_modules=target, feedforward_modules=feedforward)
    return _wrap(base, config)
