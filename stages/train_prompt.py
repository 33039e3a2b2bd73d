"""Stage train_prompt: prompt tuning: trainable soft tokens prepended to the encoder input.

Inputs:
    data/splits/train.jsonl, data/splits/val.jsonl; the base model named by `model.name`.
Outputs:
    models/prompt/ (adapter_model.safetensors + adapter_config.json),
    metrics/train/prompt.json (footprint, time, throughput, memory, final losses, provenance),
    plots/train/prompt/ (DVCLive loss curves: metrics/train/loss.tsv per logging step,
    metrics/eval/loss.tsv per epoch).
Params:
    model.*, train.*, train_prompt.*
"""

from pubmedqa_peft.config import Params
from pubmedqa_peft.stage import run
from pubmedqa_peft.training import run_training_stage


def _body(params: Params) -> None:
    run_training_stage("prompt", params)


def main() -> None:
    """Run the stage."""
    run("train_prompt", _body)


if __name__ == "__main__":
    main()
