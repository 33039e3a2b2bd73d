"""What a trained model directory is: ``models/<method>/run.json``, written beside the weights.

A training stage writes the manifest into the same directory as the adapter (or the
whole model), so the directory describes itself wherever it goes (``dvc pull``,
``dvc get``): which base model it applies to, how that base must be loaded (full
precision or quantized), which method, labels and prompt template produced it. Loading
a trained model for evaluation reads it from here, not from ``params.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pubmedqa_peft import files
from pubmedqa_peft.config import ResolvedPrecision
from pubmedqa_peft.stage import PipelineError

MANIFEST_FILE = "run.json"
SCHEMA_VERSION = 1


class RunManifest(BaseModel):
    """The contents of ``run.json``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = SCHEMA_VERSION
    method: str
    saves: Literal["adapter", "model"]
    """``adapter``: PEFT adapter files to load onto ``base_model``; ``model``: a whole model."""
    base_model: str
    """``model.name`` at training time (hub id or directory)."""
    base_model_revision: str | None = None
    """The hub snapshot's commit when the base came from the hub; None for a local directory."""
    model_type: str
    """``config.model_type`` of the base (``t5``)."""
    family: Literal["seq2seq", "causal"] = "seq2seq"
    """How the base reads prompt and answer (:mod:`pubmedqa_peft.families`)."""
    labels: tuple[str, ...]
    prompt_template: str
    """Version of :func:`pubmedqa_peft.prompts.format_prompt` the model was trained with."""
    chat_template: bool = False
    """Whether prompts went through the tokenizer's chat template (``model.chat_template``)."""
    max_source_length: int
    quantize: Literal["none", "4bit", "8bit"] = "none"
    compute_dtype: str = "float32"
    """Dtype of the quantized layers' compute (meaningful with ``quantize``)."""
    dtype: str = "float32"
    """Dtype of the non-quantized weights."""
    precision: ResolvedPrecision | None = None
    """``train.precision`` as resolved on the training device (autocast dtype of the updates);
    None in manifests written before it was recorded."""


def training_stage(directory: Path | str) -> str:
    """The command that makes a trained model directory: ``models/<method>`` or ``models/<method>/seeds/<seed>``."""
    directory = Path(directory)
    method = directory.parent.parent.name if directory.parent.name == "seeds" else directory.name
    return f"dvc repro train_{method}"


def write_manifest(directory: Path, manifest: RunManifest) -> None:
    """Write ``run.json`` into ``directory`` (atomically)."""
    files.write_json(Path(directory) / MANIFEST_FILE, manifest.model_dump(mode="json"))


def read_manifest(directory: Path | str) -> RunManifest:
    """Read ``run.json`` from a trained model directory.

    Raises:
        PipelineError: If it is missing or malformed, naming the file and the stage that writes it.
    """
    path = Path(directory) / MANIFEST_FILE
    stage = training_stage(directory)
    if not path.is_file():
        raise PipelineError(f"{path} not found: {directory} is not a complete trained model; retrain it with `{stage}`")
    try:
        return RunManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as err:
        first = str(err).splitlines()[0]
        raise PipelineError(f"{path}: not a valid run manifest ({first}); retrain with `{stage}`") from None
