"""A complete, internally consistent fake workspace of the train_* and evaluate outputs.

The plot stage is developed and tested against these files, written exactly as
``notes/outputs_schema.md`` describes them: ``metrics/eval.json``, ``metrics/train/<m>.json``,
the DVCLive loss TSVs, the per-example prediction and coverage CSVs and ``data/splits/test.jsonl``.
Every number derives from seeded random predictions, so the metrics agree with the CSVs.

``labels`` picks the task: yes/no (the default, files as the binary evaluate writes them) or
``THREE_LABELS.labels`` (yes/no/maybe: ``eval.json`` names its ``labels``, the predictions have
one probability column per label, the τ sweep starts at 1/3).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from pubmedqa_peft import evaluation, paths
from pubmedqa_peft.evaluation import expected_calibration_error
from pubmedqa_peft.task import BINARY

TRAINED = ("prompt", "prefix", "lora")
MODEL = "google/flan-t5-small"
SEED = 42
TRAIN_EXAMPLES, VAL_EXAMPLES = 712, 89
TOTAL_PARAMS = 76_961_152
# How well each fake method separates the classes (logit shift towards the gold label).
SKILL = {"base": 0.5, "prompt": 1.0, "prefix": 0.8, "lora": 1.6, "tfidf_logreg": 0.6}
TRAINABLE = {"prompt": 10_240, "prefix": 122_880, "lora": 344_064}
LATENCY_S = {"majority": 2e-6, "tfidf_logreg": 4e-4, "base": 0.045, "prompt": 0.052, "prefix": 0.049, "lora": 0.047}
_VOCABULARY = (
    "patients cohort randomized trial outcome mortality risk factor association significant "
    "analysis treatment clinical study group compared years follow-up increased reduced rate "
    "surgery therapy children women survival disease effect levels measured hospital prospective "
    "retrospective"
)
WORDS = tuple(_VOCABULARY.split())


def fake_methods(fewshot_k: tuple[int, ...] = (3, 5)) -> list[str]:
    """The method names evaluate writes, in its order."""
    return ["majority", "tfidf_logreg", "base", *(f"fewshot_k{k}" for k in fewshot_k), *TRAINED]


def _text(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=n_words)).capitalize()


# Gold shares of the three-label fake, roughly the official test set's (yes 276 / no 169 / maybe 55 of 500).
THREE_LABEL_SHARES = {"yes": 0.55, "no": 0.34, "maybe": 0.11}


def _draw_label(u: float, labels: tuple[str, ...]) -> str:
    if len(labels) == 2:
        return "yes" if u < 0.6 else "no"
    return "yes" if u < 0.55 else "no" if u < 0.89 else "maybe"


def _test_rows(rng: np.random.Generator, n: int, labels: tuple[str, ...] = BINARY.labels) -> list[dict[str, Any]]:
    ids = sorted({str(x) for x in rng.integers(10_000_000, 29_999_999, size=n * 2)})[:n]
    rows = []
    for i, pmid in enumerate(ids):
        label = _draw_label(rng.random(), labels)
        question = _text(rng, int(rng.integers(6, 16))) + "?"
        if i == 0:
            question = "Does a | pipe survive the markdown table?"
        rows.append(
            {
                "id": pmid,
                "question": question,
                "context": " ".join(_text(rng, int(rng.integers(12, 30))) + "." for _ in range(8)),
                "label": label,
                "long_answer": _text(rng, 20) + ".",
                "year": str(int(rng.integers(1990, 2016))),
                "meshes": [str(w) for w in rng.choice(WORDS, size=3)],
            }
        )
    return rows


def _p_yes(rng: np.random.Generator, method: str, gold: np.ndarray) -> np.ndarray:
    if method == "majority":
        return np.full(gold.shape, 0.6)
    k = method.removeprefix("fewshot_k")
    skill = 0.5 + 0.1 * int(k) if k.isdigit() else SKILL[method]
    logits = skill * (2 * gold - 1) + rng.normal(0.2, 1.0, size=gold.shape)
    return np.round(1 / (1 + np.exp(-logits)), 4)


def _probs(rng: np.random.Generator, method: str, gold: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """P(yes) for yes/no; otherwise an ``(n, K)`` matrix in 4 decimals whose rows sum to exactly 1 in decimal."""
    if len(labels) == 2:
        return _p_yes(rng, method, gold)
    k = len(labels)
    if method == "majority":  # each label's training share, the same for every question
        return np.tile([THREE_LABEL_SHARES[label] for label in labels], (len(gold), 1))
    fewshot = method.removeprefix("fewshot_k")
    skill = 0.5 + 0.1 * int(fewshot) if fewshot.isdigit() else SKILL[method]
    # A lean towards yes, the commonest answer, as real models have.
    lean = np.array([0.3 if label == "yes" else 0.0 for label in labels])
    logits = 1.3 * skill * np.eye(k)[gold] + lean + rng.normal(0.0, 1.0, size=(len(gold), k))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    # In units of 1e-4, the last column taking the rounding remainder: written with 4 decimals,
    # the CSV's probabilities are exactly those the metrics were computed from.
    units = np.round(exp / exp.sum(axis=1, keepdims=True) * 10_000)
    units[:, -1] = 10_000 - units[:, :-1].sum(axis=1)
    return units / 10_000


def _classification_k(
    gold: np.ndarray, probs: np.ndarray, rng: np.random.Generator, bins: int, labels: tuple[str, ...]
) -> dict[str, Any]:
    """The metrics of the K-label task, from :mod:`pubmedqa_peft.evaluation` (CIs faked as for yes/no)."""
    acc = evaluation.accuracy(gold, probs, labels)
    f1 = evaluation.macro_f1(gold, probs, labels)
    selective = evaluation.selective(gold, probs, 0.7, labels)
    return {
        **_scores(len(gold), acc, f1, rng),
        **evaluation.precision_recall(gold, probs, labels),
        "confusion": evaluation.confusion(gold, probs, labels),
        "roc_auc": evaluation.roc_auc(gold, probs, labels),
        "ece": expected_calibration_error(gold, probs, bins, labels),
        "coverage": selective["coverage"],
        "selective_accuracy": selective["selective_accuracy"],
    }


def _coverage_rows_k(gold: np.ndarray, probs: np.ndarray, labels: tuple[str, ...]) -> list[list[str]]:
    rows = []
    for point in evaluation.coverage_curve(gold, probs, 0.01, labels):
        sel = "" if point["selective_accuracy"] is None else f"{point['selective_accuracy']:.4f}"
        rows.append([f"{point['tau']:.2f}", f"{point['coverage']:.4f}", sel])
    return rows


def _prediction_rows(rows: list[dict[str, Any]], probs: np.ndarray, labels: tuple[str, ...]) -> list[list[str]]:
    if len(labels) == 2:
        pred = np.where(probs > 0.5, "yes", "no")
        conf = np.maximum(probs, 1 - probs)
        return [
            [r["id"], r["label"], f"{p:.4f}", y, f"{c:.4f}"] for r, p, y, c in zip(rows, probs, pred, conf, strict=True)
        ]
    pred, conf = evaluation.predict(probs), evaluation.confidence(probs)
    return [
        [r["id"], r["label"], *(f"{v:.4f}" for v in p), labels[y], f"{c:.4f}"]
        for r, p, y, c in zip(rows, probs, pred, conf, strict=True)
    ]


def _confusion(gold: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, int]]:
    names = {1: "yes", 0: "no"}
    return {names[g]: {names[p]: int(np.sum((gold == g) & (pred == p))) for p in (1, 0)} for g in (1, 0)}


def _scores(n: int, acc: float, f1: float, rng: np.random.Generator) -> dict[str, Any]:
    """Accuracy and macro-F1 with fake 95% CIs of a random half-width (one draw of ``rng``)."""
    half = 0.08 + 0.02 * rng.random()
    return {
        "n": n,
        "accuracy": acc,
        "accuracy_ci": {"low": max(acc - half, 0.0), "high": min(acc + half, 1.0)},
        "macro_f1": f1,
        "macro_f1_ci": {"low": max(f1 - half, 0.0), "high": min(f1 + half, 1.0)},
    }


def _classification(gold: np.ndarray, p_yes: np.ndarray, rng: np.random.Generator, bins: int) -> dict[str, Any]:
    pred = (p_yes > 0.5).astype(int)
    acc = float(np.mean(pred == gold))
    f1s, prec, rec = [], {}, {}
    for cls, name in ((1, "yes"), (0, "no")):
        tp = np.sum((pred == cls) & (gold == cls))
        p = float(tp / max(np.sum(pred == cls), 1))
        r = float(tp / max(np.sum(gold == cls), 1))
        prec[name], rec[name] = p, r
        f1s.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    f1 = float(np.mean(f1s))
    conf = np.maximum(p_yes, 1 - p_yes)
    covered = conf >= 0.7
    return {
        **_scores(len(gold), acc, f1, rng),
        "precision": prec,
        "recall": rec,
        "confusion": _confusion(gold, pred),
        "roc_auc": None if np.all(p_yes == p_yes[0]) else float(0.5 + 0.4 * rng.random()),
        "ece": expected_calibration_error(gold, p_yes, bins),
        "coverage": float(np.mean(covered)),
        "selective_accuracy": float(np.mean(pred[covered] == gold[covered])) if covered.any() else None,
    }


def _coverage_rows(gold: np.ndarray, p_yes: np.ndarray) -> list[list[str]]:
    pred = (p_yes > 0.5).astype(int)
    conf = np.maximum(p_yes, 1 - p_yes)
    rows = []
    for tau in np.round(np.arange(0.5, 1.0 + 1e-9, 0.01), 2):
        covered = conf >= tau
        sel = f"{np.mean(pred[covered] == gold[covered]):.4f}" if covered.any() else ""
        rows.append([f"{tau:.2f}", f"{np.mean(covered):.4f}", sel])
    return rows


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_losses(root: Path, method: str, rng: np.random.Generator, steps: int, epochs: int) -> None:
    start = {"prompt": 6.0, "prefix": 3.0, "lora": 1.2}[method]
    t0 = 1_700_000_000_000
    train = []
    for step in range(10, steps + 1, 10):
        loss = 0.25 + start * np.exp(-step / (steps / 4)) + rng.normal(0, 0.03)
        train.append([str(t0 + step * 500), str(step), f"{loss:.4f}"])
    val = []
    for epoch in range(1, epochs + 1):
        step = steps * epoch // epochs
        # Below the training loss, as in real runs (no dropout at evaluation; end-of-epoch weights).
        val.append([str(t0 + step * 500 + 1), str(step), f"{0.2 + 0.8 * start * np.exp(-step / (steps / 4)):.4f}"])
    for path, rows in ((paths.train_loss_file(method), train), (paths.val_loss_file(method), val)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(
            "timestamp\tstep\tloss\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8"
        )
    lr = root / paths.train_plots_dir(method) / "metrics" / "train" / "learning_rate.tsv"
    lr.write_text("timestamp\tstep\tlearning_rate\n" + f"{t0}\t10\t0.001\n", encoding="utf-8")


def write_fake_workspace(
    root: Path,
    n_test: int = 89,
    seed: int = 0,
    fewshot_k: tuple[int, ...] = (3, 5),
    bins: int = 10,
    labels: tuple[str, ...] = BINARY.labels,
) -> dict:
    """Write every input of the plot stage under ``root``.

    Args:
        root: The project root to fill (usually ``tmp_path``).
        n_test: Number of test examples.
        seed: Seed of all the random numbers.
        fewshot_k: The few-shot baselines to fake.
        bins: Calibration bins of the ECE written to eval.json.
        labels: The task's labels in column order (``BINARY.labels`` or ``THREE_LABELS.labels``).

    Returns:
        The parsed ``eval.json`` that was written.
    """
    binary = len(labels) == 2
    rng = np.random.default_rng(seed)
    rows = _test_rows(rng, n_test, labels)
    (root / paths.SPLITS_DIR).mkdir(parents=True, exist_ok=True)
    (root / paths.split_file("test")).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # Column indices; for yes/no that is yes = 1, no = 0.
    gold = np.array([labels.index(r["label"]) for r in rows], dtype=int)
    methods = fake_methods(fewshot_k)
    provenance = {
        "config": {
            "model": {"name": MODEL},
            "evaluate": {"tau": 0.7, "calibration_bins": 10, "seed": SEED},
        },
        "versions": {"python": "3.12"},
        "git_revision": "0123456789abcdef0123456789abcdef01234567",
    }
    # What the train stages record: the model and the shared train section (the figures' footers read the seed).
    train_provenance = {
        **provenance,
        "config": {"model": {"name": MODEL}, "train": {"epochs": 3, "batch_size": 8, "seed": SEED}},
    }
    columns = ["p_yes"] if binary else [f"p_{label}" for label in labels]
    test, val = {}, {}
    preds = {method: _probs(rng, method, gold, labels) for method in methods}
    for method in methods:
        probs = preds[method]
        _write_csv(
            root / paths.predictions_file(method),
            ["id", "label", *columns, "prediction", "confidence"],
            _prediction_rows(rows, probs, labels),
        )
        curve = _coverage_rows(gold, probs) if binary else _coverage_rows_k(gold, probs, labels)
        _write_csv(root / paths.coverage_file(method), ["tau", "coverage", "selective_accuracy"], curve)
        half = n_test // 2
        if binary:
            metrics = _classification(gold, probs, rng, bins)
            val[method] = _classification(gold[:half], _p_yes(rng, method, gold[:half]), rng, bins)
        else:
            metrics = _classification_k(gold, probs, rng, bins, labels)
            val_probs = _probs(rng, method, gold[:half], labels)
            val[method] = _classification_k(gold[:half], val_probs, rng, bins, labels)
        if method == "base":
            mcnemar = None
        else:
            base_right = evaluation.predict(preds["base"]) == gold
            right = evaluation.predict(probs) == gold
            b, c = int(np.sum(base_right & ~right)), int(np.sum(~base_right & right))
            mcnemar = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
        # Few-shot prompts grow with K, and so does their latency.
        lat = LATENCY_S.get(method) or 0.045 * (1 + 0.4 * int(method.removeprefix("fewshot_k")))
        trainable = TRAINABLE.get(method, 2049 if method == "tfidf_logreg" else 0)
        total = {"majority": 0, "tfidf_logreg": 2049}.get(method, TOTAL_PARAMS + trainable)
        test[method] = {
            **metrics,
            "mcnemar_p_vs_base": mcnemar,
            "latency_s": {"median": lat, "p90": lat * 1.25},
            "throughput_eps": 8.0 / lat if lat > 1e-3 else 5e5,
            "trainable_params": trainable,
            "total_params": total,
            "trainable_pct": 100.0 * trainable / total if total else 0.0,
            "tau_target": {
                "tau": None if method == "majority" else 0.8,
                "val_coverage": 0.5,
                "val_selective_accuracy": None if method == "majority" else 0.81,
                "test_coverage": 0.45,
                "test_selective_accuracy": None if method == "majority" else 0.78,
            },
        }
    eval_json: dict[str, Any] = {"test": test, "val": val, "tau": 0.7, "target_accuracy": 0.8}
    if not binary:  # as evaluate writes it: only a task other than yes/no names its labels
        eval_json["labels"] = list(labels)
    eval_json["provenance"] = provenance
    (root / paths.METRICS_DIR).mkdir(parents=True, exist_ok=True)
    (root / paths.EVAL_METRICS).write_text(json.dumps(eval_json, indent=2), encoding="utf-8")
    for i, method in enumerate(TRAINED):
        steps, epochs = 240 + 30 * i, 3
        _write_losses(root, method, rng, steps, epochs)
        trainable = TRAINABLE[method]
        train_json = {
            "method": method,
            "trainable_params": trainable,
            "total_params": TOTAL_PARAMS + trainable,
            "trainable_pct": 100.0 * trainable / (TOTAL_PARAMS + trainable),
            "train_examples": TRAIN_EXAMPLES,
            "val_examples": VAL_EXAMPLES,
            "epochs": float(epochs),
            "steps": steps,
            "train_time_s": 600.0 + 100 * i,
            "train_examples_per_s": 3.5,
            "train_real_tokens_per_s": 1200.0,
            "peak_memory_mb": 1500.0 + 50 * i,
            "final_train_loss": 0.3,
            "final_val_loss": 0.35,
            "size_on_disk_bytes": 46_771 * (i + 1),
            "device": "cpu",
            "provenance": train_provenance,
        }
        (root / paths.TRAIN_METRICS_DIR).mkdir(parents=True, exist_ok=True)
        (root / paths.train_metrics_file(method)).write_text(json.dumps(train_json, indent=2), encoding="utf-8")
    return eval_json
