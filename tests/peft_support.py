"""A small PEFT adapter of each method on a tiny T5, shared by the scoring tests."""

from __future__ import annotations

import copy

import peft
import torch


def tiny_peft(base: torch.nn.Module, method: str) -> torch.nn.Module:
    """A copy of ``base`` in a small, seeded adapter of ``method`` (lora, prompt, prefix), in eval mode."""
    cfg = base.config
    if method == "lora":
        # init_lora_weights=False: a non-zero update, so the adapter visibly changes scores.
        pc = peft.LoraConfig(task_type="SEQ_2_SEQ_LM", r=2, target_modules=["q", "v"], init_lora_weights=False)
    elif method == "prompt":
        pc = peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4, num_transformer_submodules=1)
    elif method == "prefix":
        # num_transformer_submodules=2 (PEFT's seq2seq default): with 1, PEFT hands T5 a plain
        # DynamicCache that T5's cross-attention also appends to, and the forward crashes
        # (peft 0.21.2, transformers 5.23).
        pc = peft.PrefixTuningConfig(
            task_type="SEQ_2_SEQ_LM",
            num_virtual_tokens=4,
            num_transformer_submodules=2,
            num_layers=cfg.num_decoder_layers,
            num_attention_heads=cfg.num_heads,
            token_dim=cfg.num_heads * cfg.d_kv,
        )
    else:
        raise AssertionError(method)
    torch.manual_seed(1)
    return peft.get_peft_model(copy.deepcopy(base), pc).eval()
