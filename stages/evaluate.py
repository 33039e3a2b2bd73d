"""Stage evaluate: score base, every adapter and the baselines on val and test.

Inputs:
    data/splits/{train,val,test}.jsonl; models/{prompt,prefix,lora}/ adapters;
    metrics/train/<method>.json (trainable-parameter footprints); the base model.
Outputs:
    metrics/eval.json (per split and method: accuracy, macro-F1 with bootstrap CIs,
    per-class precision/recall, confusion, ROC AUC, ECE, coverage and selective
    accuracy at tau, McNemar p vs base, latency, throughput, footprint, tau for a
    target accuracy; provenance), plots/eval/predictions/<method>.csv and
    plots/eval/coverage/<method>.csv (test split).
Params:
    model.*, evaluate.*
"""

import logging

from pubmedqa_peft.config import Params
from pubmedqa_peft.stage import run


def _body(params: Params) -> None:
    # Imported after the stage's first log line: torch and transformers take seconds to import.
    logging.getLogger("pubmedqa_peft").info("loading torch and transformers")
    from pubmedqa_peft.comparison import run_evaluate_stage

    run_evaluate_stage(params)


def main() -> None:
    """Run the stage."""
    run("evaluate", _body)


if __name__ == "__main__":
    main()
