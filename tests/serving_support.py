"""Trained-model directories for the serving tests, made in seconds instead of by training.

Each method's builder from the registry wraps a fresh tiny base model exactly as
``train_<method>`` does; its trainable weights are then set to seeded noise (LoRA's B
starts at zero and IA3's vectors at one, which would make those adapters the identity),
and the model is saved with ``save_pretrained`` and a ``run.json`` as the training stage
writes them. Only what serving reads is made: no training metrics, no loss curves.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pubmedqa_peft import modeling
from pubmedqa_peft.manifest import RunManifest, write_manifest
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import LABELS, TEMPLATE_VERSION


def write_models(base_dir: Path, out_dir: Path, methods: tuple[str, ...], max_source_length: int = 96) -> Path:
    """Write ``out_dir/<method>/`` (weights + ``run.json``) for each method, on base model ``base_dir``.

    Args:
        base_dir: A tiny random model directory (``tiny_t5_dir``).
        out_dir: Where the method directories go (a ``models/`` directory).
        methods: Registered method names.
        max_source_length: Recorded in every ``run.json``.

    Returns:
        ``out_dir``.
    """
    device = torch.device("cpu")
    for i, name in enumerate(methods):
        spec = registry.get(name)
        base = modeling.load_base_model(str(base_dir), device)
        model = spec.build(base, spec.section(), str(base_dir))
        generator = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        target = out_dir / name
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(target), safe_serialization=True)
        write_manifest(
            target,
            RunManifest(
                method=name,
                saves=spec.saves,
                base_model=str(base_dir),
                model_type=base.config.model_type,
                family="causal" if not base.config.is_encoder_decoder else "seq2seq",
                labels=LABELS,
                prompt_template=TEMPLATE_VERSION,
                max_source_length=max_source_length,
            ),
        )
    return out_dir
