"""Stage train_prefix: prefix tuning: trainable key/value prefixes in the decoder's self-attention (PEFT on T5).

Inputs:
    data/splits/train.jsonl, data/splits/val.jsonl; the base model named by `model.name`.
Outputs:
    models/prefix/ (adapter_model.safetensors + adapter_config.json),
    metrics/train/prefix.json (footprint, time, throughput, memory, final losses, provenance),
    plots/train/prefix/ (DVCLive loss curves: metrics/train/loss.tsv per logging step,
    metrics/eval/loss.tsv per epoch).
Params:
    model.*, train.*, train_prefix.*
"""

from pubmedqa_peft.config import Params
from pubmedqa_peft.stage import run
from pubmedqa_peft.training import run_training_stage


def _body(params: Params) -> None:
    run_training_stage("prefix", params)


def main() -> None:
    """Run the stage."""
    run("train_prefix", _body)


if __name__ == "__main__":
    main()
