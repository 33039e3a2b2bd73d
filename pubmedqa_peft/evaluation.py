"""Metrics of yes/no predictions given as P(yes): accuracy, F1, calibration, selective answering, tests.

Pure numpy/scipy, no torch, so every number here can be checked by hand. Conventions:

* Labels are ``"yes"``/``"no"`` or ``1``/``0``; ``yes`` = 1 is the positive class.
* The predicted label is ``yes`` iff ``p_yes > 0.5``. An exact tie goes to ``no``, the
  same as ``argmax`` over the ``[log P(no), log P(yes)]`` columns of the scorer.
* Confidence is ``max(p_yes, 1 - p_yes)``, the probability of the predicted label, so
  it lies in [0.5, 1]; a prediction is *covered* (answered) when confidence >= tau.
* A metric that is undefined (ROC AUC with one class present, selective accuracy with
  nothing covered) is ``None``, never NaN, so dicts stay JSON-serialisable.
* Precision, recall and F1 of a class with a zero denominator are 0.0 (scikit-learn's
  ``zero_division=0``); macro-F1 always averages over both classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest, rankdata

from pubmedqa_peft.prompts import LABELS

ArrayLike = Sequence[Any] | np.ndarray


def to_binary(y_true: ArrayLike) -> np.ndarray:
    """Gold labels as an int array with ``yes`` = 1, ``no`` = 0.

    Args:
        y_true: ``"yes"``/``"no"`` strings, or 0/1 (ints or bools).

    Returns:
        Array of 0/1 ints.

    Raises:
        ValueError: Naming the first position holding anything else.
    """
    out = np.empty(len(y_true), dtype=np.int64)
    for i, y in enumerate(y_true):
        if isinstance(y, str):
            if y not in LABELS:
                raise ValueError(f"label {i}: {y!r} is not one of {LABELS}")
            out[i] = LABELS.index(y)
        elif y in (0, 1):
            out[i] = int(y)
        else:
            raise ValueError(f"label {i}: {y!r} is neither 'yes'/'no' nor 0/1")
    return out


def _check(y_true: ArrayLike, p_yes: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = to_binary(y_true)
    p = np.asarray(p_yes, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != y.shape[0]:
        raise ValueError(f"p_yes has shape {p.shape}, expected ({y.shape[0]},) to match the labels")
    if y.size == 0:
        raise ValueError("no examples to evaluate")
    bad = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
    if bad.size:
        raise ValueError(f"p_yes[{bad[0]}] = {p[bad[0]]!r} is not a probability in [0, 1]")
    return y, p


def predict(p_yes: ArrayLike) -> np.ndarray:
    """Predicted labels (1 = yes) from P(yes); a tie at 0.5 predicts ``no``."""
    return (np.asarray(p_yes, dtype=np.float64) > 0.5).astype(np.int64)


def confidence(p_yes: ArrayLike) -> np.ndarray:
    """Probability of the predicted label, ``max(p_yes, 1 - p_yes)``, in [0.5, 1].

    Rounded to 12 decimals: ``1 - 0.45`` is 0.5499999999999999 in floating point, and a
    confidence of exactly ``tau`` must count as covered.
    """
    p = np.asarray(p_yes, dtype=np.float64)
    return np.round(np.maximum(p, 1.0 - p), 12)


def _opt(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# --- classification metrics ---------------------------------------------------


def _counts(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Confusion counts along the last axis: returns ``[..., gold, pred]`` as a 2x2 array."""
    tp = np.sum((y == 1) & (pred == 1), axis=-1)
    tn = np.sum((y == 0) & (pred == 0), axis=-1)
    fp = np.sum((y == 0) & (pred == 1), axis=-1)
    fn = np.sum((y == 1) & (pred == 0), axis=-1)
    return np.stack([np.stack([tn, fp], axis=-1), np.stack([fn, tp], axis=-1)], axis=-2)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class (last axis: no, yes) from ``[..., gold, pred]`` counts."""
    diag = np.stack([cm[..., 0, 0], cm[..., 1, 1]], axis=-1)
    predicted = cm.sum(axis=-2)
    gold = cm.sum(axis=-1)
    precision = _safe_div(diag, predicted)
    recall = _safe_div(diag, gold)
    f1 = _safe_div(2 * diag, predicted + gold)
    return precision, recall, f1


def accuracy(y_true: ArrayLike, p_yes: ArrayLike) -> float:
    """Share of examples whose predicted label is the gold label."""
    y, p = _check(y_true, p_yes)
    return float(np.mean(predict(p) == y))


def macro_f1(y_true: ArrayLike, p_yes: ArrayLike) -> float:
    """Unweighted mean of the F1 of ``no`` and of ``yes``."""
    y, p = _check(y_true, p_yes)
    return float(_per_class(_counts(y, predict(p)))[2].mean())


def precision_recall(y_true: ArrayLike, p_yes: ArrayLike) -> dict[str, dict[str, float]]:
    """Precision and recall of each class.

    Returns:
        ``{"precision": {"yes": ..., "no": ...}, "recall": {"yes": ..., "no": ...}}``.
    """
    y, p = _check(y_true, p_yes)
    precision, recall, _ = _per_class(_counts(y, predict(p)))
    return {
        "precision": {"yes": float(precision[1]), "no": float(precision[0])},
        "recall": {"yes": float(recall[1]), "no": float(recall[0])},
    }


def confusion(y_true: ArrayLike, p_yes: ArrayLike) -> dict[str, dict[str, int]]:
    """Confusion matrix as ``{gold: {pred: count}}`` over ``yes`` and ``no``."""
    y, p = _check(y_true, p_yes)
    cm = _counts(y, predict(p))
    return {gold: {pred: int(cm[gi, pi]) for pi, pred in enumerate(LABELS)} for gi, gold in enumerate(LABELS)}


def roc_auc(y_true: ArrayLike, p_yes: ArrayLike) -> float | None:
    """Area under the ROC curve of P(yes); ``None`` if only one class is present.

    Computed as the Mann-Whitney statistic with average ranks for ties, which equals
    the trapezoidal ROC area (scikit-learn's ``roc_auc_score``).
    """
    y, p = _check(y_true, p_yes)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- calibration ----------------------------------------------------------------


def reliability_diagram(y_true: ArrayLike, p_yes: ArrayLike, bins: int = 10) -> list[dict[str, Any]]:
    """Per-bin confidence and accuracy of the predicted label.

    Bins are equal-width over the confidence range [0.5, 1] (a binary prediction is
    never less than 0.5 confident), each half-open ``[low, high)`` except the last,
    which includes 1.0.

    Args:
        y_true: Gold labels.
        p_yes: P(yes) per example.
        bins: Number of bins (>= 1).

    Returns:
        One dict per bin: ``low``, ``high``, ``count``, and ``confidence`` (mean) and
        ``accuracy`` of its examples (``None`` for an empty bin).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y, p = _check(y_true, p_yes)
    conf = confidence(p)
    correct = predict(p) == y
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = which == b
        count = int(sel.sum())
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(conf[sel].mean()) if count else None,
                "accuracy": float(correct[sel].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(y_true: ArrayLike, p_yes: ArrayLike, bins: int = 10) -> float:
    """ECE: the count-weighted mean of ``|accuracy - confidence|`` over the reliability bins."""
    rows = reliability_diagram(y_true, p_yes, bins)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]))


# --- selective answering ----------------------------------------------------------


def selective(y_true: ArrayLike, p_yes: ArrayLike, tau: float) -> dict[str, Any]:
    """Coverage and accuracy when answering only with confidence >= ``tau``.

    Args:
        y_true: Gold labels.
        p_yes: P(yes) per example.
        tau: Confidence threshold in [0.5, 1]; at 0.5 every example is covered.

    Returns:
        ``{"tau", "coverage", "n_covered", "selective_accuracy"}``; selective accuracy is
        ``None`` when nothing is covered.
    """
    y, p = _check(y_true, p_yes)
    covered = confidence(p) >= tau
    n_covered = int(covered.sum())
    acc = float(np.mean(predict(p[covered]) == y[covered])) if n_covered else None
    return {
        "tau": float(tau),
        "coverage": n_covered / y.size,
        "n_covered": n_covered,
        "selective_accuracy": acc,
    }


def tau_grid(step: float) -> list[float]:
    """Thresholds from 0.5 to 1.0 in steps of ``step``; 1.0 is always the last one."""
    if not 0 < step <= 0.5:
        raise ValueError(f"step must be in (0, 0.5], got {step}")
    k = math.floor(0.5 / step + 1e-9)
    # Rounding keeps e.g. 0.5 + 20 * 0.01 at exactly 0.7, so ">= tau" matches the user's tau.
    taus = [round(0.5 + i * step, 10) for i in range(k + 1)]
    if taus[-1] < 1.0:
        taus.append(1.0)
    return taus


def coverage_curve(y_true: ArrayLike, p_yes: ArrayLike, step: float = 0.01) -> list[dict[str, Any]]:
    """:func:`selective` at every threshold of :func:`tau_grid`: the coverage-accuracy curve."""
    return [selective(y_true, p_yes, tau) for tau in tau_grid(step)]


def choose_tau(y_val: ArrayLike, p_val: ArrayLike, *, target: float, step: float = 0.01) -> float | None:
    """Smallest threshold whose validation selective accuracy reaches ``target``.

    Args:
        y_val: Validation gold labels.
        p_val: Validation P(yes).
        target: Required selective accuracy.
        step: Step of the threshold sweep.

    Returns:
        The smallest ``tau`` of :func:`tau_grid` with coverage > 0 and selective accuracy
        >= ``target`` on validation, or ``None`` if no threshold reaches it (the method
        cannot promise the target and should abstain on everything).
    """
    for point in coverage_curve(y_val, p_val, step):
        acc = point["selective_accuracy"]
        if point["n_covered"] > 0 and acc is not None and acc >= target:
            return point["tau"]
    return None


def tau_for_target(
    y_val: ArrayLike,
    p_val: ArrayLike,
    y_test: ArrayLike,
    p_test: ArrayLike,
    *,
    target: float,
    step: float = 0.01,
) -> dict[str, Any]:
    """Pick ``tau`` on validation for a target accuracy and report what it gives on test.

    Returns:
        ``{"target_accuracy", "tau", "val_coverage", "val_selective_accuracy",
        "test_coverage", "test_selective_accuracy"}``. When no threshold reaches the
        target, ``tau`` is ``None``, both coverages are 0.0 and both selective
        accuracies ``None`` (abstain on everything).
    """
    tau = choose_tau(y_val, p_val, target=target, step=step)
    if tau is None:
        val = {"coverage": 0.0, "selective_accuracy": None}
        test = {"coverage": 0.0, "selective_accuracy": None}
    else:
        val = selective(y_val, p_val, tau)
        test = selective(y_test, p_test, tau)
    return {
        "target_accuracy": float(target),
        "tau": tau,
        "val_coverage": float(val["coverage"]),
        "val_selective_accuracy": val["selective_accuracy"],
        "test_coverage": float(test["coverage"]),
        "test_selective_accuracy": test["selective_accuracy"],
    }


# --- uncertainty and significance -----------------------------------------------------


def bootstrap_ci(
    y_true: ArrayLike, p_yes: ArrayLike, *, n: int = 1000, seed: int = 42, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap confidence intervals of accuracy and macro-F1.

    Examples are resampled with replacement ``n`` times from ``numpy.random.default_rng(seed)``;
    both metrics are computed on the same resamples.

    Args:
        y_true: Gold labels.
        p_yes: P(yes) per example.
        n: Number of resamples.
        seed: Seed of the resampling.
        level: Coverage of the interval.

    Returns:
        ``{"accuracy": {"low", "high"}, "macro_f1": {"low", "high"}}``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    y, p = _check(y_true, p_yes)
    pred = predict(p)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(n, y.size))
    ys, preds = y[idx], pred[idx]
    acc = np.mean(ys == preds, axis=1)
    f1 = _per_class(_counts(ys, preds))[2].mean(axis=-1)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    out = {}
    for name, stat in (("accuracy", acc), ("macro_f1", f1)):
        low, high = np.percentile(stat, q)
        out[name] = {"low": float(low), "high": float(high)}
    return out


def mcnemar(y_true: ArrayLike, p_method: ArrayLike, p_base: ArrayLike) -> dict[str, Any]:
    """McNemar's exact test of a method's correctness against the base model's.

    Only discordant examples count: ``b`` where the method is right and the base wrong,
    ``c`` the reverse. Under the null both are equally likely, so ``b ~ Binomial(b + c, 0.5)``;
    the p-value is scipy's two-sided ``binomtest``, and 1.0 when there is no discordant pair.

    Args:
        y_true: Gold labels of the shared examples.
        p_method: The method's P(yes) on them.
        p_base: The base model's P(yes) on the same examples, same order.

    Returns:
        ``{"method_only_correct": b, "base_only_correct": c, "p_value": p}``.
    """
    y, pm = _check(y_true, p_method)
    _, pb = _check(y_true, p_base)
    right_m = predict(pm) == y
    right_b = predict(pb) == y
    b = int(np.sum(right_m & ~right_b))
    c = int(np.sum(~right_m & right_b))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"method_only_correct": b, "base_only_correct": c, "p_value": p_value}


# --- everything for one method -----------------------------------------------------------


def method_metrics(
    y_true: ArrayLike, p_yes: ArrayLike, *, tau: float, bins: int = 10, bootstrap: int = 1000, seed: int = 42
) -> dict[str, Any]:
    """All per-method metrics on one split, JSON-ready (python numbers, ``None`` not NaN).

    Args:
        y_true: Gold labels.
        p_yes: P(yes) per example.
        tau: Confidence threshold of ``coverage`` and ``selective_accuracy``.
        bins: Bins of the expected calibration error.
        bootstrap: Resamples of the confidence intervals.
        seed: Seed of the bootstrap.

    Returns:
        A dict with keys ``n``, ``accuracy``, ``accuracy_ci`` ``{low, high}``, ``macro_f1``,
        ``macro_f1_ci`` ``{low, high}``, ``precision`` ``{yes, no}``, ``recall``
        ``{yes, no}``, ``confusion`` ``{gold: {pred: n}}``, ``roc_auc`` (or ``None``),
        ``ece``, ``coverage`` and ``selective_accuracy`` (or ``None``).
    """
    y, p = _check(y_true, p_yes)
    ci = bootstrap_ci(y, p, n=bootstrap, seed=seed)
    pr = precision_recall(y, p)
    sel = selective(y, p, tau)
    return {
        "n": int(y.size),
        "accuracy": accuracy(y, p),
        "accuracy_ci": ci["accuracy"],
        "macro_f1": macro_f1(y, p),
        "macro_f1_ci": ci["macro_f1"],
        "precision": pr["precision"],
        "recall": pr["recall"],
        "confusion": confusion(y, p),
        "roc_auc": _opt(roc_auc(y, p)),
        "ece": expected_calibration_error(y, p, bins),
        "coverage": float(sel["coverage"]),
        "selective_accuracy": _opt(sel["selective_accuracy"]),
    }
