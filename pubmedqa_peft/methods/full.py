"""Full fine-tuning: every weight of the base model trains, and the whole model is saved.

The reference point of the comparison: what the parameter-efficient methods try to
approach at a fraction of the trainable parameters and memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pubmedqa_peft.methods.sections import FullParams

if TYPE_CHECKING:
    import torch


def full_model(base: torch.nn.Module, section: FullParams, model_name: str) -> torch.nn.Module:
    """Make every parameter of ``base`` trainable and return it (no wrapper).

    Args:
        base: The base model (loaded frozen-agnostic; this unfreezes it).
        section: ``train_full`` (unused here: lr and weight decay go to the Trainer).
        model_name: Unused (the signature is shared by every builder).

    Returns:
        ``base`` itself, every parameter with ``requires_grad=True``.
    """
    for p in base.parameters():
        p.requires_grad_(True)
    return base
