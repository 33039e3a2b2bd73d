"""Where every file of the pipeline lives, defined once.

All paths are relative to the project root, which is the working directory of every
DVC stage (``wdir`` defaults to the folder of ``dvc.yaml``).
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

DATA = Path("data")
RAW_DIR = DATA / "raw"
RAW_RECORDS = RAW_DIR / "ori_pqal.json"
CLEAN_DIR = DATA / "clean"
CLEAN_RECORDS = CLEAN_DIR / "pqal.jsonl"
SPLITS_DIR = DATA / "splits"
SPLIT_NAMES = ("train", "val", "test")

MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
DATA_METRICS_DIR = METRICS_DIR / "data"
CLEAN_METRICS = DATA_METRICS_DIR / "clean.json"
SPLIT_METRICS = DATA_METRICS_DIR / "split.json"
TRAIN_METRICS_DIR = METRICS_DIR / "train"
EVAL_METRICS = METRICS_DIR / "eval.json"
PARAMS_CHECK = METRICS_DIR / "params_check.json"
"""Written by the check_params stage when params.yaml is valid; its content never changes."""

PLOTS_DIR = Path("plots")
TRAIN_PLOTS_DIR = PLOTS_DIR / "train"
EVAL_PLOTS_DIR = PLOTS_DIR / "eval"
PREDICTIONS_DIR = EVAL_PLOTS_DIR / "predictions"
COVERAGE_DIR = EVAL_PLOTS_DIR / "coverage"
FIGURES_DIR = PLOTS_DIR / "figures"
REPORTS_DIR = Path("reports")
SUMMARY_REPORT = REPORTS_DIR / "summary.md"
EXAMPLES_REPORT = REPORTS_DIR / "examples.md"

# Resume checkpoints live outside every DVC output: DVC deletes a stage's outputs
# before it reruns the stage, which would throw away the checkpoint to resume from.
CHECKPOINTS_DIR = Path(".checkpoints")


def split_file(split: str) -> Path:
    """Path of one split's JSON-lines file.

    Args:
        split: One of ``train``, ``val``, ``test``.

    Returns:
        The path ``data/splits/<split>.jsonl``.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
    return SPLITS_DIR / f"{split}.jsonl"


def adapter_dir(method: str) -> Path:
    """Directory of one trained adapter (``models/<method>``)."""
    return MODELS_DIR / method


def train_metrics_file(method: str) -> Path:
    """Training metrics of one method (``metrics/train/<method>.json``)."""
    return TRAIN_METRICS_DIR / f"{method}.json"


def train_plots_dir(method: str) -> Path:
    """DVCLive directory holding one method's loss curves (``plots/train/<method>``)."""
    return TRAIN_PLOTS_DIR / method


def seed_dir(first_seed_dir: Path, seed: int) -> Path:
    """Where a further seed's run goes, inside the first seed's directory (``<dir>/seeds/<seed>``).

    The first of ``train.seeds`` keeps the usual places (``models/<method>``, ...), so one
    seed gives exactly the layout of a single run.
    """
    return first_seed_dir / "seeds" / str(seed)


def checkpoint_dir(method: str) -> Path:
    """Trainer checkpoints of one method, kept for resuming a killed run."""
    return CHECKPOINTS_DIR / method


def train_loss_file(method: str) -> Path:
    """Training loss per logging step, as DVCLive writes it (columns timestamp, step, loss)."""
    return train_plots_dir(method) / "metrics" / "train" / "loss.tsv"


def val_loss_file(method: str) -> Path:
    """Validation loss per epoch, as DVCLive writes it (columns timestamp, step, loss)."""
    return train_plots_dir(method) / "metrics" / "eval" / "loss.tsv"


def predictions_file(method: str) -> Path:
    """Per-example test predictions of one method (``plots/eval/predictions/<method>.csv``)."""
    return PREDICTIONS_DIR / f"{method}.csv"


def coverage_file(method: str) -> Path:
    """Coverage / selective-accuracy sweep over tau of one method (``plots/eval/coverage/<method>.csv``)."""
    return COVERAGE_DIR / f"{method}.csv"


FIGURE_NAMES = (
    "accuracy_macro_f1",
    "all_methods",
    "footprint",
    "cost_benefit",
    "loss_curves",
    "latency",
    "confusion",
    "coverage_accuracy",
    "reliability",
)
"""The PNG figures the plot stage writes, in the order the summary report lists them."""


def figure_file(name: str) -> Path:
    """One figure of the plot stage (``plots/figures/<name>.png``)."""
    if name not in FIGURE_NAMES:
        raise ValueError(f"unknown figure {name!r}; expected one of {FIGURE_NAMES}")
    return FIGURES_DIR / f"{name}.png"
