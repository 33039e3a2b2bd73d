"""Stage train_<method>: train one registered method (``python -m stages.train <method>``).

Inputs:
    data/splits/train.jsonl, data/splits/val.jsonl; the base model named by `model.name`.
Outputs:
    models/<method>/ (a PEFT adapter: adapter_model.safetensors + adapter_config.json, or
    for full fine-tuning the whole model: model.safetensors + config.json; and run.json,
    the manifest saying how to load it),
    metrics/train/<method>.json (footprint, size on disk, time, tokens seen, throughput,
    peak memory, final losses, provenance),
    plots/train/<method>/ (DVCLive loss curves: metrics/train/loss.tsv per logging step,
    metrics/eval/loss.tsv per epoch).
Params:
    model.*, train.*, train_<method>.*

With ``train.processes`` > 1 this process starts that many workers running this same
command through torch's launcher (:mod:`pubmedqa_peft.launch`); each trains one share of
every batch (DDP) and rank 0 writes the outputs.
"""

import logging
import sys

from pubmedqa_peft import launch
from pubmedqa_peft.config import Params
from pubmedqa_peft.methods import registry
from pubmedqa_peft.stage import run


def main(argv: list[str] | None = None) -> None:
    """Run the stage for the method named on the command line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in registry.names():
        print(
            f"usage: python -m stages.train METHOD, where METHOD is one of: {', '.join(registry.names())}",
            file=sys.stderr,
        )
        sys.exit(2)
    method = args[0]

    def body(params: Params) -> None:
        if params.train.processes > 1 and not launch.under_launcher():
            worker = ["-m", "stages.train", method]
            launch.launch_workers(f"train_{method}", worker, params.train.processes, params.model.device)
            return
        # Imported here, after the stage's first log line: torch, transformers and PEFT take
        # several seconds to import, which would otherwise pass in silence.
        launch.prepare_worker(params.model.device)
        logging.getLogger("pubmedqa_peft").info("loading torch, transformers and peft")
        from pubmedqa_peft.training import run_training_stage

        run_training_stage(method, params)

    run(f"train_{method}", body)


if __name__ == "__main__":
    main()
