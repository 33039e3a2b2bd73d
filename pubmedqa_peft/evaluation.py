"""Metrics of predictions given as probabilities: accuracy, F1, calibration, selective answering, tests.

Pure numpy/scipy, no torch, so every number here can be checked by hand. Conventions:

* Labels come in a fixed column order (``labels``; see :mod:`pubmedqa_peft.task`). The
  binary task's is ``("no", "yes")``: ``yes`` = 1 is the positive class, and its
  probabilities may be given as one column, P(yes); any task's as an ``(n, K)`` matrix.
* The predicted label is the most probable one; a tie goes to the earlier column. For
  the binary task that is ``yes`` iff ``p_yes > 0.5``, an exact tie going to ``no``, the
  same as ``argmax`` over the ``[log P(no), log P(yes)]`` columns of the scorer.
* Confidence is the top probability, the probability of the predicted label, so it lies
  in [1/K, 1] ([0.5, 1] for yes/no); a prediction is *covered* (answered) when
  confidence >= tau.
* A metric that is undefined (ROC AUC with one class present, selective accuracy with
  nothing covered) is ``None``, never NaN, so dicts stay JSON-serialisable.
* Precision, recall and F1 of a class with a zero denominator are 0.0 (scikit-learn's
  ``zero_division=0``); macro-F1 always averages over every class of the task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest, rankdata

from pubmedqa_peft.prompts import LABELS
from pubmedqa_peft.task import Task

ArrayLike = Sequence[Any] | np.ndarray


def to_index(y_true: ArrayLike, labels: Sequence[str] = LABELS) -> np.ndarray:
    """Gold labels as column indices into ``labels``.

    Args:
        y_true: Label strings, or column indices (ints; for the binary task also bools).
        labels: The task's labels in column order.

    Returns:
        Array of ints in ``range(len(labels))``.

    Raises:
        ValueError: Naming the first position holding anything else.
    """
    k = len(labels)
    out = np.empty(len(y_true), dtype=np.int64)
    for i, y in enumerate(y_true):
        if isinstance(y, str):
            if y not in labels:
                raise ValueError(f"label {i}: {y!r} is not one of {tuple(labels)}")
            out[i] = labels.index(y)
        elif isinstance(y, (int, np.integer)) and 0 <= y < k:
            out[i] = int(y)
        else:
            raise ValueError(f"label {i}: {y!r} is neither one of {tuple(labels)} nor a column index below {k}")
    return out


def to_binary(y_true: ArrayLike) -> np.ndarray:
    """Gold yes/no labels as an int array with ``yes`` = 1, ``no`` = 0 (:func:`to_index` of the binary task)."""
    return to_index(y_true, LABELS)


def as_matrix(probs: ArrayLike, k: int = 2) -> np.ndarray:
    """Probabilities as an ``(n, k)`` matrix; a binary task's P(yes) vector becomes ``[1 - p, p]``.

    For ``p`` in (0.5, 1] the subtraction ``1 - p`` is exact, so the matrix predicts exactly
    what ``p > 0.5`` does.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1 and k == 2:
        return np.stack([1.0 - p, p], axis=1)
    return p


def _check(y_true: ArrayLike, probs: ArrayLike, labels: Sequence[str] = LABELS) -> tuple[np.ndarray, np.ndarray]:
    """Gold indices and the probabilities as given (P(yes) vector or ``(n, K)`` matrix), checked."""
    y = to_index(y_true, labels)
    k = len(labels)
    p = np.asarray(probs, dtype=np.float64)
    expected = f"({y.shape[0]},) or ({y.shape[0]}, {k})" if k == 2 else f"({y.shape[0]}, {k})"
    ok_shape = (p.ndim == 1 and k == 2) or (p.ndim == 2 and p.shape[1] == k)
    if not ok_shape or p.shape[0] != y.shape[0]:
        raise ValueError(f"probabilities have shape {p.shape}, expected {expected} to match the labels")
    if y.size == 0:
        raise ValueError("no examples to evaluate")
    bad = np.argwhere(~np.isfinite(p) | (p < 0) | (p > 1))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        name = f"p_yes[{where[0]}]" if p.ndim == 1 else f"probability [{where[0]}, {labels[where[1]]}]"
        raise ValueError(f"{name} = {float(p[where])!r} is not a probability in [0, 1]")
    if p.ndim == 2:
        sums = p.sum(axis=1)
        off = np.flatnonzero(np.abs(sums - 1) > 1e-6)
        if off.size:
            raise ValueError(f"probabilities of example {off[0]} sum to {float(sums[off[0]])!r}, not 1")
    return y, p


def predict(probs: ArrayLike) -> np.ndarray:
    """Predicted column per example: the most probable, the earlier column on a tie.

    A P(yes) vector predicts 1 (yes) iff ``p > 0.5``; a tie at 0.5 predicts ``no``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        return (p > 0.5).astype(np.int64)
    return np.argmax(p, axis=1).astype(np.int64)


def confidence(probs: ArrayLike) -> np.ndarray:
    """Probability of the predicted label (the top probability), in [1/K, 1].

    Rounded to 12 decimals: ``1 - 0.45`` is 0.5499999999999999 in floating point, and a
    confidence of exactly ``tau`` must count as covered.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        return np.round(np.maximum(p, 1.0 - p), 12)
    return np.round(np.max(p, axis=1), 12)


def _opt(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# --- classification metrics ---------------------------------------------------


def _counts(y: np.ndarray, pred: np.ndarray, k: int = 2) -> np.ndarray:
    """Confusion counts along the last axis: returns ``[..., gold, pred]`` as a ``k x k`` array."""
    rows = [np.stack([np.sum((y == g) & (pred == q), axis=-1) for q in range(k)], axis=-1) for g in range(k)]
    return np.stack(rows, axis=-2)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class (last axis: the label columns) from ``[..., gold, pred]`` counts."""
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    predicted = cm.sum(axis=-2)
    gold = cm.sum(axis=-1)
    precision = _safe_div(diag, predicted)
    recall = _safe_div(diag, gold)
    f1 = _safe_div(2 * diag, predicted + gold)
    return precision, recall, f1


def accuracy(y_true: ArrayLike, probs: ArrayLike, labels: Sequence[str] = LABELS) -> float:
    """Share of examples whose predicted label is the gold label."""
    y, p = _check(y_true, probs, labels)
    return float(np.mean(predict(p) == y))


def macro_f1(y_true: ArrayLike, probs: ArrayLike, labels: Sequence[str] = LABELS) -> float:
    """Unweighted mean of the F1 of every label of the task."""
    y, p = _check(y_true, probs, labels)
    return float(_per_class(_counts(y, predict(p), len(labels)))[2].mean())


def precision_recall(
    y_true: ArrayLike, probs: ArrayLike, labels: Sequence[str] = LABELS
) -> dict[str, dict[str, float]]:
    """Precision and recall of each class.

    Returns:
        ``{"precision": {"yes": ..., "no": ...}, "recall": {...}}`` (``maybe`` too with three labels),
        labels in the order people read them (:data:`pubmedqa_peft.task.DISPLAY_ORDER`).
    """
    y, p = _check(y_true, probs, labels)
    precision, recall, _ = _per_class(_counts(y, predict(p), len(labels)))
    shown = Task.of(labels).display
    return {
        "precision": {label: float(precision[labels.index(label)]) for label in shown},
        "recall": {label: float(recall[labels.index(label)]) for label in shown},
    }


def confusion(y_true: ArrayLike, probs: ArrayLike, labels: Sequence[str] = LABELS) -> dict[str, dict[str, int]]:
    """Confusion matrix as ``{gold: {pred: count}}`` over the task's labels, in column order."""
    y, p = _check(y_true, probs, labels)
    cm = _counts(y, predict(p), len(labels))
    return {gold: {pred: int(cm[gi, pi]) for pi, pred in enumerate(labels)} for gi, gold in enumerate(labels)}


def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Mann-Whitney ROC area of ``score`` for the boolean ``positive``; ``None`` with one class present."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: ArrayLike, probs: ArrayLike, labels: Sequence[str] = LABELS) -> float | None:
    """Area under the ROC curve: of P(yes) for yes/no; the one-vs-rest macro mean over labels otherwise.

    Computed as the Mann-Whitney statistic with average ranks for ties, which equals
    the trapezoidal ROC area (scikit-learn's ``roc_auc_score``; ``multi_class="ovr"``,
    ``average="macro"`` for K labels). ``None`` if only one class is present; with K labels,
    a class absent from the gold labels is left out of the mean.
    """
    y, p = _check(y_true, probs, labels)
    if len(labels) == 2:
        return _auc(y == 1, p if p.ndim == 1 else p[:, 1])
    areas = [a for c in range(len(labels)) if (a := _auc(y == c, p[:, c])) is not None]
    return float(np.mean(areas)) if areas else None


# --- calibration ----------------------------------------------------------------


def reliability_diagram(
    y_true: ArrayLike, probs: ArrayLike, bins: int = 10, labels: Sequence[str] = LABELS
) -> list[dict[str, Any]]:
    """Per-bin confidence and accuracy of the predicted label (the top probability).

    Bins are equal-width over the confidence range [1/K, 1] ([0.5, 1] for yes/no: a
    prediction is never less confident than that), each half-open ``[low, high)`` except
    the last, which includes 1.0.

    Args:
        y_true: Gold labels.
        probs: P(yes) per example, or the ``(n, K)`` probabilities.
        bins: Number of bins (>= 1).
        labels: The task's labels in column order.

    Returns:
        One dict per bin: ``low``, ``high``, ``count``, and ``confidence`` (mean) and
        ``accuracy`` of its examples (``None`` for an empty bin).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y, p = _check(y_true, probs, labels)
    conf = confidence(p)
    correct = predict(p) == y
    edges = np.linspace(1.0 / len(labels), 1.0, bins + 1)
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


def expected_calibration_error(
    y_true: ArrayLike, probs: ArrayLike, bins: int = 10, labels: Sequence[str] = LABELS
) -> float:
    """ECE of the top probability: the count-weighted mean of ``|accuracy - confidence|`` over the bins."""
    rows = reliability_diagram(y_true, probs, bins, labels)
    n = sum(r["count"] for r in rows)
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]))


# --- selective answering ----------------------------------------------------------


def selective(y_true: ArrayLike, probs: ArrayLike, tau: float, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Coverage and accuracy when answering only with confidence >= ``tau``.

    Args:
        y_true: Gold labels.
        probs: P(yes) per example, or the ``(n, K)`` probabilities.
        tau: Confidence threshold in [1/K, 1]; at 1/K every example is covered.
        labels: The task's labels in column order.

    Returns:
        ``{"tau", "coverage", "n_covered", "selective_accuracy"}``; selective accuracy is
        ``None`` when nothing is covered.
    """
    y, p = _check(y_true, probs, labels)
    covered = confidence(p) >= tau
    n_covered = int(covered.sum())
    acc = float(np.mean(predict(p[covered]) == y[covered])) if n_covered else None
    return {
        "tau": float(tau),
        "coverage": n_covered / y.size,
        "n_covered": n_covered,
        "selective_accuracy": acc,
    }


def tau_grid(step: float, k: int = 2) -> list[float]:
    """Thresholds from 1/``k`` (0.5 for yes/no) to 1.0 in steps of ``step``; 1.0 is always the last one."""
    low = 1.0 / k
    if not 0 < step <= 1.0 - low:
        raise ValueError(f"step must be in (0, {1.0 - low:g}], got {step}")
    n = math.floor((1.0 - low) / step + 1e-9)
    # Rounding keeps e.g. 0.5 + 20 * 0.01 at exactly 0.7, so ">= tau" matches the user's tau.
    taus = [round(low + i * step, 10) for i in range(n + 1)]
    if taus[-1] < 1.0:
        taus.append(1.0)
    return taus


def coverage_curve(
    y_true: ArrayLike, probs: ArrayLike, step: float = 0.01, labels: Sequence[str] = LABELS
) -> list[dict[str, Any]]:
    """:func:`selective` at every threshold of :func:`tau_grid`: the coverage-accuracy curve."""
    return [selective(y_true, probs, tau, labels) for tau in tau_grid(step, len(labels))]


def choose_tau(
    y_val: ArrayLike, p_val: ArrayLike, *, target: float, step: float = 0.01, labels: Sequence[str] = LABELS
) -> float | None:
    """Smallest threshold whose validation selective accuracy reaches ``target``.

    Args:
        y_val: Validation gold labels.
        p_val: Validation probabilities (P(yes), or ``(n, K)``).
        target: Required selective accuracy.
        step: Step of the threshold sweep.
        labels: The task's labels in column order.

    Returns:
        The smallest ``tau`` of :func:`tau_grid` with coverage > 0 and selective accuracy
        >= ``target`` on validation, or ``None`` if no threshold reaches it (the method
        cannot promise the target and should abstain on everything).
    """
    for point in coverage_curve(y_val, p_val, step, labels):
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
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """Pick ``tau`` on validation for a target accuracy and report what it gives on test.

    Returns:
        ``{"target_accuracy", "tau", "val_coverage", "val_selective_accuracy",
        "test_coverage", "test_selective_accuracy"}``. When no threshold reaches the
        target, ``tau`` is ``None``, both coverages are 0.0 and both selective
        accuracies ``None`` (abstain on everything).
    """
    tau = choose_tau(y_val, p_val, target=target, step=step, labels=labels)
    if tau is None:
        val = {"coverage": 0.0, "selective_accuracy": None}
        test = {"coverage": 0.0, "selective_accuracy": None}
    else:
        val = selective(y_val, p_val, tau, labels)
        test = selective(y_test, p_test, tau, labels)
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
    y_true: ArrayLike,
    probs: ArrayLike,
    *,
    n: int = 1000,
    seed: int = 42,
    level: float = 0.95,
    labels: Sequence[str] = LABELS,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap confidence intervals of accuracy and macro-F1.

    Examples are resampled with replacement ``n`` times from ``numpy.random.default_rng(seed)``;
    both metrics are computed on the same resamples.

    Args:
        y_true: Gold labels.
        probs: P(yes) per example, or the ``(n, K)`` probabilities.
        n: Number of resamples.
        seed: Seed of the resampling.
        level: Coverage of the interval.
        labels: The task's labels in column order.

    Returns:
        ``{"accuracy": {"low", "high"}, "macro_f1": {"low", "high"}}``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    y, p = _check(y_true, probs, labels)
    pred = predict(p)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(n, y.size))
    ys, preds = y[idx], pred[idx]
    acc = np.mean(ys == preds, axis=1)
    f1 = _per_class(_counts(ys, preds, len(labels)))[2].mean(axis=-1)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    out = {}
    for name, stat in (("accuracy", acc), ("macro_f1", f1)):
        low, high = np.percentile(stat, q)
        out[name] = {"low": float(low), "high": float(high)}
    return out


def mcnemar(
    y_true: ArrayLike, p_method: ArrayLike, p_base: ArrayLike, labels: Sequence[str] = LABELS
) -> dict[str, Any]:
    """McNemar's exact test of a method's correctness against the base model's.

    Only discordant examples count: ``b`` where the method is right and the base wrong,
    ``c`` the reverse. Under the null both are equally likely, so ``b ~ Binomial(b + c, 0.5)``;
    the p-value is scipy's two-sided ``binomtest``, and 1.0 when there is no discordant pair.

    Args:
        y_true: Gold labels of the shared examples.
        p_method: The method's probabilities on them.
        p_base: The base model's probabilities on the same examples, same order.
        labels: The task's labels in column order.

    Returns:
        ``{"method_only_correct": b, "base_only_correct": c, "p_value": p}``.
    """
    y, pm = _check(y_true, p_method, labels)
    _, pb = _check(y_true, p_base, labels)
    right_m = predict(pm) == y
    right_b = predict(pb) == y
    b = int(np.sum(right_m & ~right_b))
    c = int(np.sum(~right_m & right_b))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return {"method_only_correct": b, "base_only_correct": c, "p_value": p_value}


# --- everything for one method -----------------------------------------------------------


def method_metrics(
    y_true: ArrayLike,
    probs: ArrayLike,
    *,
    tau: float,
    bins: int = 10,
    bootstrap: int = 1000,
    seed: int = 42,
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """All per-method metrics on one split, JSON-ready (python numbers, ``None`` not NaN).

    Args:
        y_true: Gold labels.
        probs: P(yes) per example (yes/no), or the ``(n, K)`` probabilities.
        tau: Confidence threshold of ``coverage`` and ``selective_accuracy``.
        bins: Bins of the expected calibration error.
        bootstrap: Resamples of the confidence intervals.
        seed: Seed of the bootstrap.
        labels: The task's labels in column order.

    Returns:
        A dict with keys ``n``, ``accuracy``, ``accuracy_ci`` ``{low, high}``, ``macro_f1``,
        ``macro_f1_ci`` ``{low, high}``, ``precision`` and ``recall`` per label,
        ``confusion`` ``{gold: {pred: n}}``, ``roc_auc`` (or ``None``), ``ece``,
        ``coverage`` and ``selective_accuracy`` (or ``None``).
    """
    y, p = _check(y_true, probs, labels)
    ci = bootstrap_ci(y, p, n=bootstrap, seed=seed, labels=labels)
    pr = precision_recall(y, p, labels)
    sel = selective(y, p, tau, labels)
    return {
        "n": int(y.size),
        "accuracy": accuracy(y, p, labels),
        "accuracy_ci": ci["accuracy"],
        "macro_f1": macro_f1(y, p, labels),
        "macro_f1_ci": ci["macro_f1"],
        "precision": pr["precision"],
        "recall": pr["recall"],
        "confusion": confusion(y, p, labels),
        "roc_auc": _opt(roc_auc(y, p, labels)),
        "ece": expected_calibration_error(y, p, bins, labels),
        "coverage": float(sel["coverage"]),
        "selective_accuracy": _opt(sel["selective_accuracy"]),
    }
