"""Stage train_lora: LoRA: low-rank updates of the attention projections.

Inputs:
    data/splits/train.jsonl, data/splits/val.jsonl; the base model named by `model.name`.
Outputs:
    models/lora/ (adapter_model.safetensors + adapter_config.json),
    metrics/train/lora.json (footprint, time, throughput, memory, final losses, provenance),
    plots/train/lora/ (DVCLive loss curves: metrics/train/loss.tsv per logging step,
    metrics/eval/loss.tsv per epoch).
Params:
    model.*, train.*, train_lora.*
"""

from pubmedqa_peft.config import Params
from pubmedqa_peft.stage import run
from pubmedqa_peft.training import run_training_stage


def _body(params: Params) -> None:
    run_training_stage("lora", params)


def main() -> None:
    """Run the stage."""
    run("train_lora", _body)


if __name__ == "__main__":
    main()
