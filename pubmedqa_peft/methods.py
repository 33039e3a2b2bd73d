"""Which PEFT configuration each method uses, built from its ``params.yaml`` section.

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
"""

from __future__ import annotations

from typing import Any

from peft import LoraConfig as PeftLoraConfig
from peft import PeftConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType

from pubmedqa_peft.config import LoraConfig, Params
from pubmedqa_peft.config import PrefixTuningConfig as PrefixParams
from pubmedqa_peft.config import PromptTuningConfig as PromptParams


def peft_config(method: str, params: Params, model_config: Any, tokenizer_name: str) -> PeftConfig:
    """Build the PEFT configuration of one method for a T5-style base model.

    Args:
        method: ``prompt``, ``prefix`` or ``lora``.
        params: The validated parameters (the method's own section is read).
        model_config: The base model's ``config`` (for heads, ``d_kv`` and layers).
        tokenizer_name: Where PEFT loads the tokenizer for text initialisation of the
            soft prompt (the same name or directory as the model).

    Returns:
        A PEFT config ready for ``get_peft_model``.
    """
    section = params.method(method)
    if isinstance(section, PromptParams):
        init: dict[str, Any] = {"prompt_tuning_init": PromptTuningInit.RANDOM}
        if section.init == "text":
            init = {
                "prompt_tuning_init": PromptTuningInit.TEXT,
                "prompt_tuning_init_text": section.init_text,
                "tokenizer_name_or_path": tokenizer_name,
            }
        return PromptTuningConfig(
            task_type=TaskType.SEQ_2_SEQ_LM,
            num_virtual_tokens=section.num_virtual_tokens,
            num_transformer_submodules=1,
            **init,
        )
    if isinstance(section, PrefixParams):
        heads = model_config.num_heads
        return PrefixTuningConfig(
            task_type=TaskType.SEQ_2_SEQ_LM,
            num_virtual_tokens=section.num_virtual_tokens,
            num_transformer_submodules=2,
            num_layers=model_config.num_decoder_layers,
            num_attention_heads=heads,
            token_dim=heads * model_config.d_kv,
            prefix_projection=section.prefix_projection,
            encoder_hidden_size=section.encoder_hidden_size,
        )
    if isinstance(section, LoraConfig):
        return PeftLoraConfig(
            task_type=TaskType.SEQ_2_SEQ_LM,
            r=section.r,
            lora_alpha=section.alpha,
            lora_dropout=section.dropout,
            target_modules=list(section.target_modules),
        )
    raise AssertionError(f"no PEFT config for method {method!r}")
