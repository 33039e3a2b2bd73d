"""Tests of the metrics: checked against scikit-learn, scipy and hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from pubmedqa_peft import evaluation as ev


def _case(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and imperfect, partly tied probabilities (ties exercise ROC ranking)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, size=n), 0, 1)
    p[:6] = [0.2, 0.2, 0.8, 0.8, 0.5, 0.5]
    return y, np.round(p, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_scikit_learn(seed):
    y, p = _case(seed=seed)
    pred = (p > 0.5).astype(int)
    assert ev.accuracy(y, p) == pytest.approx(accuracy_score(y, pred))
    assert ev.macro_f1(y, p) == pytest.approx(f1_score(y, pred, average="macro", labels=[0, 1]))
    pr = ev.precision_recall(y, p)
    for name, cls in (("yes", 1), ("no", 0)):
        assert pr["precision"][name] == pytest.approx(precision_score(y, pred, pos_label=cls))
        assert pr["recall"][name] == pytest.approx(recall_score(y, pred, pos_label=cls))
    cm = confusion_matrix(y, pred, labels=[0, 1])
    conf = ev.confusion(y, p)
    assert conf == {
        "no": {"no": int(cm[0, 0]), "yes": int(cm[0, 1])},
        "yes": {"no": int(cm[1, 0]), "yes": int(cm[1, 1])},
    }
    assert ev.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))


def test_string_labels_equal_integer_labels():
    y, p = _case()
    words = ["yes" if v else "no" for v in y]
    assert ev.method_metrics(words, p, tau=0.7, bootstrap=50) == ev.method_metrics(y, p, tau=0.7, bootstrap=50)


def test_degenerate_predictions_follow_zero_division_zero():
    y = np.array([1, 1, 0, 0, 1])
    p = np.full(5, 0.9)  # always "yes": precision of "no" has no predictions
    pr = ev.precision_recall(y, p)
    assert pr["precision"]["no"] == 0.0 and pr["recall"]["no"] == 0.0
    pred = np.ones(5, dtype=int)
    assert ev.macro_f1(y, p) == pytest.approx(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0))


def test_tie_at_one_half_predicts_no():
    assert ev.predict([0.5, 0.5000001, 0.4999999]).tolist() == [0, 1, 0]


def test_roc_auc_with_one_class_is_none_and_json_safe():
    y = np.ones(5, dtype=int)
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.4])
    assert ev.roc_auc(y, p) is None
    metrics = ev.method_metrics(y, p, tau=0.95, bins=5, bootstrap=20)
    assert metrics["roc_auc"] is None
    assert metrics["selective_accuracy"] is None  # nothing is 0.95 confident
    json.dumps(metrics, allow_nan=False)


def test_method_metrics_schema_and_types():
    y, p = _case()
    m = ev.method_metrics(y, p, tau=0.7, bins=10, bootstrap=200, seed=3)
    assert list(m) == [
        "n",
        "accuracy",
        "accuracy_ci",
        "macro_f1",
        "macro_f1_ci",
        "precision",
        "recall",
        "confusion",
        "roc_auc",
        "ece",
        "coverage",
        "selective_accuracy",
    ]
    assert m["n"] == len(y) and type(m["n"]) is int
    for key in ("accuracy", "macro_f1", "roc_auc", "ece", "coverage", "selective_accuracy"):
        assert type(m[key]) is float, key
    assert set(m["accuracy_ci"]) == {"low", "high"} == set(m["macro_f1_ci"])
    assert set(m["precision"]) == {"yes", "no"} == set(m["recall"])
    assert sum(v for row in m["confusion"].values() for v in row.values()) == len(y)
    json.dumps(m, allow_nan=False)


def test_ece_on_a_hand_made_case():
    # bins of width 0.1 over [0.5, 1]; confidences .95 .92 | .85 | .65 | .55
    y = [1, 0, 0, 0, 1]
    p = [0.95, 0.92, 0.15, 0.65, 0.55]
    # correct:  T     F     T     F     T
    expected = (2 * abs(0.5 - 0.935) + abs(1 - 0.85) + abs(0 - 0.65) + abs(1 - 0.55)) / 5
    assert ev.expected_calibration_error(y, p, bins=5) == pytest.approx(expected)
    rows = ev.reliability_diagram(y, p, bins=5)
    assert [r["count"] for r in rows] == [1, 1, 0, 1, 2]
    assert rows[2]["accuracy"] is None and rows[2]["confidence"] is None
    assert rows[4]["confidence"] == pytest.approx(0.935) and rows[4]["accuracy"] == 0.5
    assert rows[-1]["high"] == 1.0


def test_ece_of_a_perfectly_confident_correct_model_is_zero():
    assert ev.expected_calibration_error([1, 0, 1], [1.0, 0.0, 1.0]) == 0.0


def test_selective_on_a_hand_made_case():
    y = [1, 1, 0, 0]
    p = [0.9, 0.3, 0.2, 0.6]  # confidences .9 .7 .8 .6; correct T F T F
    out = ev.selective(y, p, 0.75)
    assert out["coverage"] == 0.5 and out["n_covered"] == 2 and out["selective_accuracy"] == 1.0
    assert ev.selective(y, p, 0.7)["selective_accuracy"] == pytest.approx(2 / 3)
    assert ev.selective(y, p, 0.95)["selective_accuracy"] is None
    # 1 - 0.45 is 0.5499999999999999 in floating point; a confidence of exactly tau is covered.
    assert ev.selective([0], [0.45], 0.55)["coverage"] == 1.0


def test_coverage_curve_starts_at_full_coverage_and_plain_accuracy():
    y, p = _case()
    curve = ev.coverage_curve(y, p, step=0.05)
    assert curve[0]["tau"] == 0.5 and curve[0]["coverage"] == 1.0
    assert curve[0]["selective_accuracy"] == ev.accuracy(y, p)
    assert curve[-1]["tau"] == 1.0
    coverages = [pt["coverage"] for pt in curve]
    assert coverages == sorted(coverages, reverse=True)


def test_tau_grid_is_exact_and_ends_at_one():
    grid = ev.tau_grid(0.01)
    assert len(grid) == 51 and grid[0] == 0.5 and grid[-1] == 1.0
    assert 0.7 in grid  # a configured tau lands exactly on the grid
    assert ev.tau_grid(0.3) == [0.5, 0.8, 1.0]
    with pytest.raises(ValueError):
        ev.tau_grid(0)


def test_choose_tau_picks_the_smallest_threshold_reaching_the_target():
    # confidences .55 (wrong) .65 (wrong) .75 .85 .95 (right)
    y = [1, 1, 1, 1, 1]
    p = [0.45, 0.35, 0.75, 0.85, 0.95]
    assert ev.choose_tau(y, p, target=0.6, step=0.05) == 0.5  # 3/5 right with everything covered
    assert ev.choose_tau(y, p, target=0.7, step=0.05) == 0.6  # 3/4 right from .6 up (.55 still 3/5)
    assert ev.choose_tau(y, p, target=1.0, step=0.05) == 0.7
    out = ev.tau_for_target(y, p, [1, 0], [0.9, 0.72], target=1.0, step=0.05)
    assert out["tau"] == 0.7 and out["val_coverage"] == 0.6 and out["val_selective_accuracy"] == 1.0
    assert out["test_coverage"] == 1.0 and out["test_selective_accuracy"] == 0.5


def test_choose_tau_when_no_threshold_reaches_the_target():
    y = [1, 0, 1]
    p = [0.1, 0.9, 0.2]  # confidently wrong everywhere
    assert ev.choose_tau(y, p, target=0.5) is None
    out = ev.tau_for_target(y, p, y, p, target=0.5)
    assert out["tau"] is None and out["test_coverage"] == 0.0 and out["test_selective_accuracy"] is None
    json.dumps(out, allow_nan=False)


def test_bootstrap_matches_a_scikit_learn_loop_and_is_seeded():
    y, p = _case(n=40)
    ci = ev.bootstrap_ci(y, p, n=300, seed=7)
    # The same resamples, scored one by one with scikit-learn.
    idx = np.random.default_rng(7).integers(0, len(y), size=(300, len(y)))
    pred = (p > 0.5).astype(int)
    accs = [accuracy_score(y[i], pred[i]) for i in idx]
    f1s = [f1_score(y[i], pred[i], average="macro", labels=[0, 1], zero_division=0) for i in idx]
    assert ci["accuracy"]["low"] == pytest.approx(np.percentile(accs, 2.5))
    assert ci["accuracy"]["high"] == pytest.approx(np.percentile(accs, 97.5))
    assert ci["macro_f1"]["low"] == pytest.approx(np.percentile(f1s, 2.5))
    assert ci["macro_f1"]["high"] == pytest.approx(np.percentile(f1s, 97.5))
    assert ci["accuracy"]["low"] <= ev.accuracy(y, p) <= ci["accuracy"]["high"]
    assert ci["macro_f1"]["low"] <= ev.macro_f1(y, p) <= ci["macro_f1"]["high"]
    assert ev.bootstrap_ci(y, p, n=300, seed=7) == ci
    assert ev.bootstrap_ci(y, p, n=300, seed=8) != ci


def test_mcnemar_equals_a_hand_computed_exact_binomial_p():
    # method right / base wrong on 1 example, the reverse on 6, both right on 3.
    y = [1] * 10
    p_method = [0.9] * 4 + [0.1] * 6
    p_base = [0.1] + [0.9] * 9
    out = ev.mcnemar(y, p_method, p_base)
    assert out["method_only_correct"] == 1 and out["base_only_correct"] == 6
    # Two-sided exact: 2 * P(X <= 1), X ~ Binomial(7, 1/2) = 2 * (1 + 7) / 128.
    assert out["p_value"] == pytest.approx(2 * (math.comb(7, 0) + math.comb(7, 1)) / 2**7)


def test_mcnemar_without_discordant_pairs_is_one():
    y = [1, 0, 1]
    p = [0.9, 0.2, 0.3]
    assert ev.mcnemar(y, p, p) == {"method_only_correct": 0, "base_only_correct": 0, "p_value": 1.0}


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        (["yes", "maybe"], [0.5, 0.5], "label 1"),
        ([1, 2], [0.5, 0.5], "label 1"),
        ([1, 0], [0.5], "shape"),
        ([1, 0], [0.5, float("nan")], r"p_yes\[1\]"),
        ([1, 0], [0.5, 1.5], r"p_yes\[1\]"),
        ([], [], "no examples"),
    ],
)
def test_bad_input_is_refused_clearly(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        ev.accuracy(labels, probs)


# --- three labels (yes / no / maybe) ------------------------------------------------------------

THREE = ("no", "yes", "maybe")


def _case3(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three-class labels and imperfect probability rows (rows sum to 1, some ties)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    logits = rng.normal(0, 1, size=(n, 3))
    logits[np.arange(n), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p[0] = [1 / 3, 1 / 3, 1 / 3]  # a three-way tie goes to the first column
    return y, p


def test_three_label_metrics_match_scikit_learn():
    y, p = _case3()
    pred = p.argmax(axis=1)
    assert ev.predict(p)[0] == 0 and np.array_equal(ev.predict(p), pred)
    assert ev.accuracy(y, p, THREE) == pytest.approx(accuracy_score(y, pred))
    assert ev.macro_f1(y, p, THREE) == pytest.approx(f1_score(y, pred, average="macro", labels=[0, 1, 2]))
    pr = ev.precision_recall(y, p, THREE)
    assert list(pr["precision"]) == ["yes", "no", "maybe"]
    for c, label in enumerate(THREE):
        assert pr["precision"][label] == pytest.approx(precision_score(y, pred, labels=[c], average="macro"))
        assert pr["recall"][label] == pytest.approx(recall_score(y, pred, labels=[c], average="macro"))
    cm = confusion_matrix(y, pred, labels=[0, 1, 2])
    conf = ev.confusion(y, p, THREE)
    assert [[conf[g][q] for q in THREE] for g in THREE] == cm.tolist()
    assert ev.roc_auc(y, p, THREE) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    # Strings work as well as column indices.
    assert ev.accuracy([THREE[i] for i in y], p, THREE) == ev.accuracy(y, p, THREE)


def test_three_label_confidence_bins_and_taus_start_at_a_third():
    y, p = _case3()
    rows = ev.reliability_diagram(y, p, 4, THREE)
    assert rows[0]["low"] == pytest.approx(1 / 3) and rows[-1]["high"] == 1.0
    assert sum(r["count"] for r in rows) == len(y)
    conf = p.max(axis=1)
    acc = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(1 / 3, 1, 5)
    which = np.clip(np.searchsorted(edges, np.round(conf, 12), side="right") - 1, 0, 3)
    want = sum(
        abs(acc[which == b].mean() - conf[which == b].mean()) * (which == b).sum()
        for b in range(4)
        if (which == b).any()
    )
    assert ev.expected_calibration_error(y, p, 4, THREE) == pytest.approx(want / len(y))
    taus = ev.tau_grid(0.1, 3)
    assert taus[0] == pytest.approx(1 / 3) and taus[-1] == 1.0
    curve = ev.coverage_curve(y, p, 0.1, THREE)
    assert curve[0]["coverage"] == 1.0 and curve[0]["selective_accuracy"] == pytest.approx(acc.mean())
    assert [c["coverage"] for c in curve] == sorted((c["coverage"] for c in curve), reverse=True)


def test_three_label_rows_must_be_probabilities_over_three_columns():
    y, p = _case3(6)
    with pytest.raises(ValueError, match=r"shape \(6, 2\).*expected \(6, 3\)"):
        ev.accuracy(y, p[:, :2], THREE)
    bad = p.copy()
    bad[2] = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"example 2 sum to 1\.5"):
        ev.accuracy(y, bad, THREE)
    with pytest.raises(ValueError, match="'perhaps' is not one of"):
        ev.accuracy(["perhaps"] * 6, p, THREE)


def test_the_binary_task_as_a_two_column_matrix_gives_the_same_metrics_bit_for_bit():
    y, p = _case()
    as_vector = ev.method_metrics(y, p, tau=0.7, bins=5, bootstrap=200, seed=3)
    as_matrix = ev.method_metrics(y, ev.as_matrix(p), tau=0.7, bins=5, bootstrap=200, seed=3)
    assert json.dumps(as_vector) == json.dumps(as_matrix)
    assert ev.mcnemar(y, p, 1 - p) == ev.mcnemar(y, ev.as_matrix(p), ev.as_matrix(1 - p))


def test_three_label_method_metrics_have_every_key_and_a_per_class_row_for_maybe():
    y, p = _case3()
    m = ev.method_metrics(y, p, tau=0.5, bins=5, bootstrap=100, seed=0, labels=THREE)
    assert set(m["recall"]) == {"yes", "no", "maybe"} and set(m["confusion"]) == set(THREE)
    assert m["accuracy_ci"]["low"] <= m["accuracy"] <= m["accuracy_ci"]["high"]
    assert m["macro_f1_ci"]["low"] <= m["macro_f1"] <= m["macro_f1_ci"]["high"]
    assert 0 < m["coverage"] < 1 and m["roc_auc"] > 0.5
