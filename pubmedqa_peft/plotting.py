"""The comparison figures: one function per figure, plain data in, a matplotlib Figure out.

Every figure colours a method the same way (:func:`method_color`, the Okabe-Ito
colour-blind-friendly palette; the few-shot baselines get shades of one hue), and every
artist drawn for a method carries the method name as its ``gid`` so tests can check
what was drawn. :func:`save_figure` writes a PNG atomically. Nothing here reads files:
:mod:`pubmedqa_peft.reports` loads the stage inputs and calls these functions.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import textwrap
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import blended_transform_factory

from pubmedqa_peft import paths
from pubmedqa_peft.evaluation import expected_calibration_error, reliability_diagram
from pubmedqa_peft.files import atomic_path
from pubmedqa_peft.methods import registry
from pubmedqa_peft.task import BINARY, DISPLAY_ORDER, Task

log = logging.getLogger(__name__)

_FEWSHOT = re.compile(r"^fewshot_k(\d+)$")

# Okabe & Ito (2008), "Color Universal Design": distinguishable with any colour-vision deficiency.
# The training methods' colours are declared with them in the method registry.
_COLORS = {
    "base": "#4D4D4D",  # dark grey: the frozen reference every method is compared with
    "tfidf_logreg": "#D55E00",  # vermillion
    "majority": "#B3B3B3",  # light grey: the floor
}
# Few-shot baselines: shades of Okabe-Ito's reddish purple (#CC79A7), light to dark.
# K picks shade (K - 1) mod 6, so any two K closer than 6 apart get different shades.
_FEWSHOT_SHADES = ("#F2C4DC", "#E3A1C5", "#CC79A7", "#A85A8A", "#80406A", "#55264A")
# Anything else (a method added later) gets a stable colour from its name.
_FALLBACK = ("#56B4E9", "#F0E442", "#8C564B", "#17BECF", "#BCBD22", "#7F7F7F")

_LABELS = {
    "base": "base (zero-shot)",
    "tfidf_logreg": "TF-IDF + log. reg.",
    "majority": "majority class",
}


def probability_columns(labels: Sequence[str]) -> list[str]:
    """The probability columns of a predictions CSV (``plots/eval/predictions/<method>.csv``).

    Args:
        labels: The task's labels in column order.

    Returns:
        ``["p_yes"]`` for yes/no (P(no) is 1 minus it); otherwise ``p_<label>`` per label, in column order.
    """
    return Task.of(labels).probability_columns


def probabilities(predictions: pd.DataFrame, labels: Sequence[str] = BINARY.labels) -> np.ndarray:
    """A predictions table's probabilities as :mod:`pubmedqa_peft.evaluation` takes them.

    Args:
        predictions: Per-example predictions with the columns of :func:`probability_columns`.
        labels: The task's labels in column order.

    Returns:
        P(yes) per example for yes/no; otherwise the ``(n, K)`` matrix, each row divided by its
        sum. The CSV rounds each probability to 6 decimals, so a row can sum to 1 ± K·5e-7,
        beyond what evaluation accepts; dividing by the sum changes no prediction.
    """
    columns = probability_columns(labels)
    if len(labels) == 2:
        return predictions[columns[0]].to_numpy(dtype=np.float64)
    matrix = predictions[columns].to_numpy(dtype=np.float64)
    return matrix / matrix.sum(axis=1, keepdims=True)


def trained_vs_base() -> tuple[str, ...]:
    """The methods of the headline figure: the frozen model and every registered training method."""
    return ("base", *registry.names())


# Applied around each figure function, never globally: importing this module changes no settings.
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "figure.titlesize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

_F = TypeVar("_F", bound=Callable[..., Figure])


def _styled(func: _F) -> _F:
    """Draw the figure under the house style."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with mpl.rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _fewshot_k(method: str) -> int | None:
    match = _FEWSHOT.match(method)
    return int(match.group(1)) if match else None


def method_color(method: str) -> str:
    """The one colour of a method, the same in every figure.

    Args:
        method: A method name as in ``eval.json`` (``lora``, ``fewshot_k3``, ...).

    Returns:
        A hex colour.
    """
    if method in _COLORS:
        return _COLORS[method]
    if method in registry.REGISTRY:
        return registry.REGISTRY[method].color
    k = _fewshot_k(method)
    if k is not None:
        return _FEWSHOT_SHADES[(k - 1) % len(_FEWSHOT_SHADES)]
    return _FALLBACK[zlib.crc32(method.encode()) % len(_FALLBACK)]


def method_label(method: str) -> str:
    """Human-readable name of a method for legends and titles (e.g. ``few-shot (k=3)``)."""
    k = _fewshot_k(method)
    if k is not None:
        return f"few-shot (k={k})"
    if method in registry.REGISTRY:
        return registry.REGISTRY[method].label
    return _LABELS.get(method, method)


def order_methods(methods: Iterable[str]) -> list[str]:
    """Sort methods for display: base, the trained methods, few-shot by K, TF-IDF, majority, then others.

    Args:
        methods: Method names in any order.

    Returns:
        The same names in display order.
    """
    fixed = list(trained_vs_base())
    tail = ["tfidf_logreg", "majority"]

    def key(m: str) -> tuple[int, int, str]:
        if m in fixed:
            return (0, fixed.index(m), "")
        k = _fewshot_k(m)
        if k is not None:
            return (1, k, "")
        if m in tail:
            return (2, tail.index(m), "")
        return (3, 0, m)

    return sorted(set(methods), key=key)


def _text_color(fill: str) -> str:
    """Black or white, whichever reads better on ``fill`` (relative luminance)."""
    r, g, b = to_rgb(fill)
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _panel_grid(
    n: int, ncols: int, panel_w: float, panel_h: float, *, sharex: bool = False, sharey: bool = False
) -> tuple[Figure, list[Any]]:
    """A grid of ``n`` panels; unused cells are removed so ``fig.axes`` has exactly ``n`` panels.

    With shared axes matplotlib shows tick labels on the outer panels only; a panel whose
    neighbour below was removed gets its x tick labels back, or its column would have none.
    """
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel_w * ncols, panel_h * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    for ax in flat[max(n - ncols, 0) : n]:
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


def _outer_labels(axes: Sequence[Any], ncols: int, xlabel: str | None, ylabel: str) -> None:
    """Axis labels on the bottom panel of each column (None: leave x alone) and the first panel of each row."""
    ncols = max(1, min(ncols, len(axes)))
    for i, ax in enumerate(axes):
        if xlabel is not None and i + ncols >= len(axes):
            ax.set_xlabel(xlabel)
        if i % ncols == 0:
            ax.set_ylabel(ylabel)


@dataclass(frozen=True)
class FigureContext:
    """What the figures were computed from, printed in each figure's footer.

    A PNG is often read on its own (pasted into slides, a chat, a review), far from
    ``eval.json``: the footer says which model, which split and how many examples, and
    which seed, so a number read off the figure can be traced back.

    Attributes:
        model: The base model (``provenance.config.model.name`` of ``eval.json``).
        train_seed: ``train.seed`` of the training runs ("42"; "42/7" if the runs differ), if known.
        eval_seed: ``evaluate.seed`` (bootstrap CIs, few-shot exemplars), if known.
        train_n: Training examples per training run, if known.
        val_n: Validation examples the validation loss was measured on, if known.
    """

    model: str = "unknown model"
    train_seed: str | None = None
    eval_seed: str | None = None
    train_n: str | None = None
    val_n: str | None = None

    def _join(self, *parts: str | None) -> str:
        # No-break spaces inside a part: a narrow figure wraps the line between parts, never in "n = 89".
        return " · ".join(p.replace(" ", "\u00a0") for p in (f"model: {self.model}", *parts) if p)

    def _seeds(self) -> str | None:
        if self.train_seed and self.eval_seed and self.train_seed != self.eval_seed:
            return f"train seed {self.train_seed}, evaluate seed {self.eval_seed}"
        if self.train_seed or self.eval_seed:
            return f"seed {self.train_seed or self.eval_seed}"
        return None

    def evaluation(self, n: str) -> str:
        """Footer of a figure of test-split metrics, e.g. ``model: X · test split, n = 89 · seed 42``.

        Args:
            n: Test examples per method (``"89"``, or ``"88/89"`` if the methods differ).
        """
        return self._join(f"test split, n = {n}", self._seeds())

    def training(self) -> str:
        """Footer of the loss curves: the model, the train and validation sizes and the training seed."""
        sizes = [f"{split} split, n = {n}" for split, n in (("train", self.train_n), ("val", self.val_n)) if n]
        return self._join(*sizes, f"seed {self.train_seed}" if self.train_seed else None)


_FOOTER_PT = 8.5


def _wrap(fig: Figure, text: str, points: float) -> str:
    """``text`` wrapped to the width of ``fig`` at a font size of ``points`` (about 0.55 em per character)."""
    return textwrap.fill(text, max(30, int(fig.get_figwidth() * 72 / (points * 0.55))))


def _footer(fig: Figure, *lines: str | None) -> None:
    """Write ``lines`` (a caption, the context) small and grey below everything else in the figure.

    It is the figure's ``supxlabel``, so constrained layout keeps room for it; that is also
    why no figure puts its legend below the axes (the two would share the bottom margin and
    overlap). Its ``gid`` is ``"context"``.
    """
    # Wrapped, or a long caption would run off a narrow figure (the loss curves of a single method).
    text = "\n".join(_wrap(fig, line, _FOOTER_PT) for line in lines if line)
    if text:
        fig.supxlabel(text, fontsize=_FOOTER_PT, color="0.25", linespacing=1.5, gid="context")


@_styled
def plot_metric_bars(
    test: Mapping[str, Mapping[str, Any]], methods: Sequence[str], title: str, *, footer: str | None = None
) -> Figure:
    """Accuracy and macro-F1 with their 95% bootstrap CIs, one bar per method in each group.

    Args:
        test: ``eval.json["test"]``: per method ``accuracy``, ``accuracy_ci``, ``macro_f1``, ``macro_f1_ci``.
        methods: Which methods to show, in display order.
        title: Figure title.
        footer: Text under the figure (the :class:`FigureContext` line); None for none.

    Returns:
        The figure (one bar per method and metric; each bar's ``gid`` is its method). A
        method trained on several seeds (``seeds`` in its metrics) also gets one dot per
        seed on each of its bars (``gid`` = ``seeds:<method>``): the bar is the first seed's.
    """
    metrics = (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1"))
    spread = any(test[m].get("seeds") for m in methods)
    n = len(methods)
    width = 0.84 / n
    fig = Figure(figsize=(max(6.5, 2.2 + 1.0 * n), 4.8), layout="constrained")
    ax = fig.subplots()
    for i, method in enumerate(methods):
        m = test[method]
        values = [m[key] for key, _ in metrics]
        lows = [m[f"{key}_ci"]["low"] for key, _ in metrics]
        highs = [m[f"{key}_ci"]["high"] for key, _ in metrics]
        yerr = [
            [max(v - lo, 0.0) for v, lo in zip(values, lows, strict=True)],
            [max(hi - v, 0.0) for v, hi in zip(values, highs, strict=True)],
        ]
        x = np.arange(len(metrics)) - 0.42 + width * (i + 0.5)
        color = method_color(method)
        bars = ax.bar(
            x,
            values,
            width * 0.92,
            yerr=yerr,
            capsize=3,
            color=color,
            edgecolor="black",
            linewidth=0.5,
            label=method_label(method),
            error_kw={"elinewidth": 1, "ecolor": "black"},
        )
        for bar, value in zip(bars, values, strict=True):
            bar.set_gid(method)
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                0.02,
                f"{value:.2f}",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=8,
                color=_text_color(color),
            )
        for j, (key, _) in enumerate(metrics):
            runs = [s[key] for s in (m.get("seeds") or {}).values()]
            if runs:
                ax.plot(
                    [x[j]] * len(runs),
                    runs,
                    ls="none",
                    marker="o",
                    ms=4,
                    mfc="white",
                    mec="black",
                    gid=f"seeds:{method}",
                )
    if spread:
        ax.plot([], [], ls="none", marker="o", ms=4, mfc="white", mec="black", label="one training seed")
    ax.set_xticks(np.arange(len(metrics)), [name for _, name in metrics])
    ax.set_xlim(-0.5, len(metrics) - 0.5)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Score on the test split (0–1)")
    seeds_note = "; dot = one training seed, bar = the first" if spread else ""
    ax.set_title(f"{title}\n(bar = point estimate, error bar = 95% bootstrap CI{seeds_note})")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside right upper", frameon=False)
    _footer(fig, footer)
    return fig


def footprint_methods(test: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Methods shown in the footprint figure: base, the PEFT methods, and any other with trainable parameters.

    Few-shot baselines are left out (they are the base model, same footprint), as is the
    majority baseline (no parameters at all).
    """
    keep = [m for m in test if m in trained_vs_base() or test[m].get("trainable_params", 0) > 0]
    return order_methods(keep)


def _count(n: float) -> str:
    """Compact parameter count: 10.2K, 77.0M."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


@_styled
def plot_footprint(
    test: Mapping[str, Mapping[str, Any]], methods: Sequence[str], *, footer: str | None = None
) -> Figure:
    """Trainable versus total parameters per method, log scale, with the trainable percentage labelled.

    Args:
        test: ``eval.json["test"]``: per method ``trainable_params``, ``total_params``, ``trainable_pct``.
        methods: Which methods to show (see :func:`footprint_methods`).
        footer: Text under the figure (the :class:`FigureContext` line); None for none.

    Returns:
        The figure: one total bar (grey) per method and one trainable bar (method colour,
        ``gid`` = method) per method with trainable parameters.
    """
    n = len(methods)
    fig = Figure(figsize=(9, 1.2 + 0.75 * n), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    totals = [test[m]["total_params"] for m in methods]
    top = max([*totals, 1])
    ax.barh(y - 0.18, totals, 0.36, color="#E5E5E5", edgecolor="0.4", hatch="//")
    for i, method in enumerate(methods):
        m = test[method]
        trainable, total = m["trainable_params"], m["total_params"]
        if trainable > 0:
            bar = ax.barh(i + 0.18, trainable, 0.36, color=method_color(method), edgecolor="black", linewidth=0.5)
            bar.patches[0].set_gid(method)
            note = f"{_count(trainable)} trainable of {_count(total)} ({100 * trainable / total:.3g}%)"
        else:
            note = f"0 trainable (frozen) of {_count(total)}"
        ax.text(top * 1.6, i, note, va="center", fontsize=9)
    ax.set_xscale("log")
    # Room right of the longest bar for the labels; the left edge stays below the smallest count.
    smallest = min([test[m]["trainable_params"] for m in methods if test[m]["trainable_params"] > 0], default=1e3)
    ax.set_xlim(min(1e2, smallest / 3), top * 3e3)
    ax.set_yticks(y, [method_label(m) for m in methods])
    ax.invert_yaxis()
    ax.set_xlabel("Parameters (count, log scale)")
    # The key is in the title: a legend beside the axes would squeeze the bars and their labels, and
    # below them it would sit on the footer.
    ax.set_title(
        "Parameter footprint: trainable vs total parameters\n"
        "(hatched grey bar = total, coloured bar = trainable, in the method's colour)"
    )
    ax.grid(axis="x", alpha=0.3, which="major")
    ax.set_axisbelow(True)
    _footer(fig, footer)
    return fig


# Why the validation points can sit below the training line: said on the figure, as in the README.
LOSS_GAP_CAPTION = (
    "Validation loss can sit below training loss without anything being wrong: dropout is active while "
    "training and off when validating, and each training point is the mean over the steps since the "
    "previous log (taken with earlier, worse weights), while the validation loss is measured once, "
    "with the weights at the end of the epoch."
)


@_styled
def plot_loss_curves(curves: Mapping[str, Mapping[str, pd.DataFrame]], *, footer: str | None = None) -> Figure:
    """Training loss per logging step (line) and validation loss per epoch (markers), one panel per method.

    Every panel has the same y-axis, starting at 0, so the methods' losses compare at a
    glance; a caption under the panels says why validation loss can be the lower one.

    Args:
        curves: Per method ``{"train": DataFrame(step, loss), "val": DataFrame(step, loss)}``.
        footer: Text under the caption (the :class:`FigureContext` line); None for none.

    Returns:
        The figure: one panel per method, each with a train line and val markers (``gid`` = method).
    """
    methods = list(curves)
    ncols = 3
    fig, axes = _panel_grid(len(methods), ncols, 4.4, 3.6, sharey=True)
    for ax, method in zip(axes, methods, strict=True):
        color = method_color(method)
        train, val = curves[method]["train"], curves[method]["val"]
        ax.set_gid(f"panel:{method}")
        if len(train):
            (line,) = ax.plot(
                train["step"], train["loss"], color=color, lw=1.6, label="train (mean since the previous log)"
            )
            line.set_gid(method)
        if len(val):
            (marks,) = ax.plot(
                val["step"],
                val["loss"],
                ls="none",
                marker="o",
                ms=7,
                color=color,
                markeredgecolor="black",
                label="validation (end of epoch)",
            )
            marks.set_gid(method)
        if not len(train) and not len(val):
            ax.text(0.5, 0.5, "no loss logged", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(method_label(method), color="black")
        ax.set_xlabel("Optimizer step")  # every panel: the methods' step counts differ, x is not shared
        ax.grid(alpha=0.3)
    if axes:
        # Shared, so this sets every panel: cross-entropy is never negative, and a zero floor keeps heights comparable.
        axes[0].set_ylim(bottom=0)
    for ax in axes:
        # After the shared y-limits are set: "best" then avoids the curves as they are drawn
        # (a fixed corner covered them once the axis starts at 0 and the losses sit high).
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    _outer_labels(axes, ncols, None, "Loss (cross-entropy, nats/token)")
    fig.suptitle(
        _wrap(fig, "Training and validation loss (the same y-axis in every panel)", _STYLE["figure.titlesize"])
    )
    _footer(fig, LOSS_GAP_CAPTION, footer)
    return fig


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


@_styled
def plot_latency(test: Mapping[str, Mapping[str, Any]], methods: Sequence[str], *, footer: str | None = None) -> Figure:
    """Batch-1 latency per request: median bar with a whisker up to the 90th percentile.

    Args:
        test: ``eval.json["test"]``: per method ``latency_s: {median, p90}`` in seconds.
        methods: Which methods to show, in display order.
        footer: Text under the figure (the :class:`FigureContext` line); None for none.

    Returns:
        The figure: one horizontal bar per method (``gid`` = method), in milliseconds.
    """
    n = len(methods)
    fig = Figure(figsize=(9, 1.3 + 0.55 * n), layout="constrained")
    ax = fig.subplots()
    medians = np.array([test[m]["latency_s"]["median"] * 1e3 for m in methods])
    p90s = np.array([test[m]["latency_s"]["p90"] * 1e3 for m in methods])
    bars = ax.barh(
        np.arange(n),
        medians,
        0.65,
        xerr=[np.zeros(n), np.maximum(p90s - medians, 0)],
        capsize=4,
        color=[method_color(m) for m in methods],
        edgecolor="black",
        linewidth=0.5,
        error_kw={"elinewidth": 1.2, "ecolor": "black"},
    )
    right = max(float(p90s.max()), 1e-9)
    for i, (bar, method) in enumerate(zip(bars, methods, strict=True)):
        bar.set_gid(method)
        lat = test[method]["latency_s"]
        ax.text(
            max(p90s[i], medians[i]) + right * 0.015,
            i,
            f"{_ms(lat['median'])} ms (p90 {_ms(lat['p90'])} ms)",
            va="center",
            fontsize=9,
        )
    ax.set_xlim(0, right * 1.35)
    ax.set_yticks(np.arange(n), [method_label(m) for m in methods])
    ax.invert_yaxis()
    ax.set_xlabel("Latency per request at batch size 1 (ms)")
    ax.set_title("Inference latency: bar = median, whisker = 90th percentile")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    _footer(fig, footer)
    return fig


def confusion_labels(confusion: Mapping[str, Mapping[str, int]]) -> tuple[str, ...]:
    """The labels of a ``{gold: {pred: count}}`` confusion matrix in the order people read them (yes, no, maybe).

    ``eval.json`` writes the matrix in column order (no, yes, ...); the figure shows the
    positive class first, as every per-class table does.
    """
    keys = set(confusion)
    return (*(label for label in DISPLAY_ORDER if label in keys), *sorted(keys - set(DISPLAY_ORDER)))


@_styled
def plot_confusion(
    test: Mapping[str, Mapping[str, Any]],
    methods: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    footer: str | None = None,
) -> Figure:
    """Confusion-matrix heatmaps, one K×K panel per method, with counts and row-normalised rates.

    Args:
        test: ``eval.json["test"]``: per method ``confusion[gold][pred]`` counts.
        methods: Which methods to show, in display order.
        labels: The task's labels in the order drawn (rows top to bottom, columns left to right);
            None: those of the first method's matrix, in :func:`confusion_labels` order.
        footer: Text under the figure (the :class:`FigureContext` line); None for none.

    Returns:
        The figure: one panel per method (axes ``gid`` = ``panel:<method>``, frame in the
        method colour with ``gid`` = method) plus one colour bar.
    """
    if labels is None:
        labels = confusion_labels(test[methods[0]]["confusion"]) if methods else ("yes", "no")
    k = len(labels)
    # Room for K×K cells of "count\n(rate)": the binary panels keep their size, each further label adds some.
    fig, axes = _panel_grid(len(methods), 4, 3.0 + 0.6 * (k - 2), 2.9 + 0.5 * (k - 2))
    image = None
    for ax, method in zip(axes, methods, strict=True):
        conf = test[method]["confusion"]
        counts = np.array([[conf[g][p] for p in labels] for g in labels], dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for g in range(k):
            for p in range(k):
                ax.text(
                    p,
                    g,
                    f"{int(counts[g, p])}\n({rates[g, p]:.0%})",
                    ha="center",
                    va="center",
                    fontsize=10 if k == 2 else 9,
                    color="white" if rates[g, p] > 0.6 else "black",
                )
        ax.set_xticks(range(k), labels)
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("Gold")
        ax.set_title(method_label(method))
        ax.set_gid(f"panel:{method}")
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor(method_color(method))
            spine.set_linewidth(4)
            spine.set_gid(method)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="Rate within the gold class (row-normalised)")
    fig.suptitle(f"Test confusion matrices (counts and row-normalised rates, n = {_n(test, methods)})")
    _footer(fig, footer)
    return fig


def _n(test: Mapping[str, Mapping[str, Any]], methods: Sequence[str]) -> str:
    ns = sorted({test[m]["n"] for m in methods if "n" in test[m]})
    return "/".join(str(x) for x in ns) or "?"


def _mark_tau(ax: Any, method: str, metrics: Mapping[str, Any], tau: float, middle: float) -> None:
    """Mark where ``method`` operates at ``tau`` and label the mark with the threshold.

    The point comes from ``eval.json`` (coverage and selective accuracy at exactly ``tau``), not
    from the sweep, so it agrees with the summary table even when ``tau`` is off the sweep grid.
    With nothing answered, selective accuracy is undefined: the mark then sits at coverage 0 on
    the x-axis line itself (half of it below), where it cannot be read as an accuracy, and no
    method's mark can vanish.
    """
    coverage, accuracy = float(metrics["coverage"]), metrics.get("selective_accuracy")
    if accuracy is None:
        # x in data units, y in axes units: on the x-axis line, whatever the y-range.
        transform, y = blended_transform_factory(ax.transData, ax.transAxes), 0.0
        text = f"τ = {tau:.2f}: " + ("nothing answered" if coverage == 0 else "accuracy not reported")
        high = False
    else:
        transform, y = ax.transData, float(accuracy)
        text = f"τ = {tau:.2f}"
        high = y > middle
    (mark,) = ax.plot(
        [coverage],
        [y],
        transform=transform,
        ls="none",
        marker="D",
        ms=9,
        color=method_color(method),
        markeredgecolor="black",
        markeredgewidth=1.5,
        zorder=5,
        clip_on=False,
    )
    mark.set_gid(method)
    # The label points into the panel, away from the nearest edges, so it is never cut off.
    right = coverage > 0.5
    ax.annotate(
        text,
        (coverage, y),
        xycoords=transform,
        xytext=(-10 if right else 10, -14 if high else 12),
        textcoords="offset points",
        ha="right" if right else "left",
        va="top" if high else "bottom",
        fontsize=8,
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.9},
        zorder=6,
    )


@_styled
def plot_coverage_accuracy(
    curves: Mapping[str, pd.DataFrame],
    test: Mapping[str, Mapping[str, Any]],
    tau: float,
    *,
    footer: str | None = None,
) -> Figure:
    """Selective accuracy against coverage as the confidence threshold τ is swept: one panel per method.

    Small multiples, because overlaid the curves and their τ marks hide one another. Each panel
    draws its method's measured points (one per τ of the sweep grid, joined by thin steps rather
    than long straight lines that would look measured) over the other methods' curves in light
    grey, and marks the operating threshold τ, labelled with its value. Coverage runs from 0
    (left) to 1 (right) in every panel, so raising τ moves a method to the left.

    Args:
        curves: Per method a DataFrame with columns ``tau``, ``coverage``, ``selective_accuracy``
            (NaN where nothing is covered), in display order.
        test: ``eval.json["test"]``: per method ``coverage`` and ``selective_accuracy`` (None when
            nothing is covered) at ``tau``.
        tau: The operating threshold (``eval.json["tau"]``).
        footer: Text under the figure (the :class:`FigureContext` line); None for none.

    Returns:
        The figure: one panel per method (axes ``gid`` = ``panel:<method>``) with the method's
        curve and its τ mark (both ``gid`` = method), and the other methods' curves in grey
        (``gid`` = ``others:<method>``).
    """
    methods = list(curves)
    # Sorted by coverage (the sweep runs up in τ, so down in coverage): steps need x ascending.
    measured = {
        m: curves[m].dropna(subset=["selective_accuracy"]).sort_values("coverage", kind="stable") for m in methods
    }
    drawn = [float(df["selective_accuracy"].min()) for df in measured.values() if len(df)]
    drawn += [float(test[m]["selective_accuracy"]) for m in methods if test[m].get("selective_accuracy") is not None]
    # One y-range for all panels, from a round value just under the lowest accuracy drawn.
    bottom = max(0.0, math.floor((min(drawn, default=0.5) - 0.02) * 20) / 20)
    ncols = 4
    fig, axes = _panel_grid(len(methods), ncols, 3.7, 3.1, sharex=True, sharey=True)
    for ax, method in zip(axes, methods, strict=True):
        ax.set_gid(f"panel:{method}")
        for other in methods:
            if other != method:
                df = measured[other]
                (grey,) = ax.plot(
                    df["coverage"], df["selective_accuracy"], color="0.85", lw=1, drawstyle="steps-post", zorder=1
                )
                grey.set_gid(f"others:{other}")
        df = measured[method]
        # A constant-confidence method (majority) has one or two points: large and outlined, or a
        # light colour would be lost among the grey curves.
        few = df["coverage"].nunique() <= 2
        (line,) = ax.plot(
            df["coverage"],
            df["selective_accuracy"],
            color=method_color(method),
            lw=1,
            drawstyle="steps-post",
            marker="o",
            ms=7 if few else 3.5,
            markeredgecolor="black" if few else method_color(method),
            markeredgewidth=0.8 if few else 0,
            zorder=3,
            clip_on=False,
        )
        line.set_gid(method)
        _mark_tau(ax, method, test[method], tau, (bottom + 1) / 2)
        m = test[method]
        at = f"coverage {m['coverage']:.2f}"
        if m.get("selective_accuracy") is not None:
            at += f", acc. {m['selective_accuracy']:.3f}"
        ax.set_title(f"{method_label(method)}\nτ = {tau:.2f}: {at}", fontsize=10)
        ax.grid(alpha=0.3)
    if axes:  # shared: setting the first panel sets them all
        axes[0].set_xlim(-0.03, 1.03)
        axes[0].set_ylim(bottom, 1.02)
    _outer_labels(
        axes,
        ncols,
        "Coverage (share of questions\nanswered, τ falls →)",
        "Selective accuracy\n(correct among answered)",
    )
    handles = [
        Line2D(
            [],
            [],
            color="0.3",
            lw=1,
            marker="o",
            ms=3.5,
            label="this method: one point per τ\nof the sweep (steps join them)",
        ),
        Line2D([], [], color="0.85", lw=1, label="the other methods"),
        Line2D(
            [],
            [],
            ls="none",
            marker="D",
            ms=9,
            color="white",
            markeredgecolor="black",
            markeredgewidth=1.5,
            label=f"operating threshold\nτ = {tau:.2f} (evaluate.tau)",
        ),
    ]
    # Centred on the right: at the top it would run into a wide suptitle.
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    fig.suptitle(
        "Coverage vs selective accuracy on the test split as the confidence threshold τ varies\n"
        "(a method answers when its confidence ≥ τ: raising τ moves it left, to fewer answers)"
    )
    _footer(fig, footer)
    return fig


def _bound(x: float) -> str:
    """A bin edge for a title: ``0.5``, ``1``, or a fraction such as ``1/3`` where a decimal would not end."""
    frac = Fraction(x).limit_denominator(12)
    return f"{frac.numerator}/{frac.denominator}" if frac.denominator > 2 and math.isclose(frac, x) else f"{x:g}"


@_styled
def plot_reliability(
    predictions: Mapping[str, pd.DataFrame],
    bins: int,
    *,
    labels: Sequence[str] = BINARY.labels,
    footer: str | None = None,
) -> Figure:
    """Reliability diagrams: accuracy per confidence bin against the diagonal, one panel per method.

    Confidence is the top probability, that of the predicted label, so it lies in [1/K, 1]
    and so do the bins. They are those of the reported ECE
    (:func:`pubmedqa_peft.evaluation.reliability_diagram`), so the diagram and ``eval.json``'s
    ``ece`` describe the same numbers.

    Args:
        predictions: Per method a DataFrame with ``label`` (gold) and the probability columns
            of :func:`probability_columns` (``p_yes``; ``p_no``, ``p_yes``, ``p_maybe``).
        bins: Number of equal-width confidence bins (``evaluate.calibration_bins``).
        labels: The task's labels in column order.
        footer: Text under the figure (the :class:`FigureContext` line); None for none.

    Returns:
        The figure: one panel per method; one bar per non-empty bin (``gid`` = method),
        labelled with its number of examples.
    """
    methods = list(predictions)
    fig, axes = _panel_grid(len(methods), 4, 3.4, 3.3)
    span = (1.0 / len(labels), 1.0)
    for ax, method in zip(axes, methods, strict=True):
        df = predictions[method]
        gold, probs = df["label"].tolist(), probabilities(df, labels)
        table = pd.DataFrame(reliability_diagram(gold, probs, bins, labels))
        span = (float(table["low"].min()), float(table["high"].max()))
        used = table[table["count"] > 0]
        color = method_color(method)
        ax.plot(span, span, ls="--", color="0.4", lw=1)
        centres, widths = (used["low"] + used["high"]) / 2, used["high"] - used["low"]
        bars = ax.bar(centres, used["accuracy"].astype(float), widths, color=color, edgecolor="black", linewidth=0.5)
        for bar, count in zip(bars, used["count"], strict=True):
            bar.set_gid(method)
            # Counts sit at the foot of each bar, clear of the diagonal and the confidence ticks;
            # above a bar too short to hold them.
            inside = bar.get_height() >= 0.12
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                0.02 if inside else bar.get_height() + 0.02,
                str(count),
                ha="center",
                va="bottom",
                fontsize=8,
                color=_text_color(color) if inside else "black",
            )
        ax.plot(used["confidence"], used["confidence"], ls="none", marker="_", ms=10, color="black")
        ece = expected_calibration_error(gold, probs, bins, labels)
        ax.set_xlim(*span)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{method_label(method)}\nECE = {ece:.3f}")
        ax.set_xlabel("Confidence (prob. of predicted label)")
        ax.set_ylabel("Accuracy in bin (fraction)")
        ax.set_gid(f"panel:{method}")
    handles = [
        Line2D([], [], ls="--", color="0.4", label="perfect calibration"),
        Rectangle((0, 0), 1, 1, facecolor="0.55", edgecolor="black", label="accuracy in bin (method colour)"),
        Line2D([], [], ls="none", marker="_", ms=10, color="black", label="mean confidence in bin"),
    ]
    # Centred on the right: at the top it would run into a wide suptitle.
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    _footer(fig, footer)
    fig.suptitle(
        f"Reliability diagrams on the test split ({bins} equal-width confidence bins on "
        f"[{_bound(span[0])}, {_bound(span[1])}]; number in bar = examples)"
    )
    return fig


def save_figure(fig: Figure, target: Path | str, dpi: int) -> Path:
    """Write ``fig`` as a PNG atomically.

    Args:
        fig: The figure.
        target: Destination ``.png`` path.
        dpi: Resolution.

    Returns:
        ``target`` as a Path.
    """
    target = Path(target)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": None})
    return target


@_styled
def plot_cost_benefit(
    test: Mapping[str, Mapping[str, Any]], train: Mapping[str, Mapping[str, Any]], *, footer: str | None = None
) -> Figure:
    """Test macro-F1 against what a method costs: trainable parameters, and peak training memory.

    One point per trained method with its 95% bootstrap CI as a vertical bar; the frozen
    base model is a grey line (zero trainable parameters cannot sit on a log axis). This
    is the picture a method is chosen from: how close each gets to full fine-tuning, and
    at what price.

    Args:
        test: ``eval.json["test"]``: per method ``macro_f1``, ``macro_f1_ci``, ``trainable_params``.
        train: Per trained method its ``metrics/train/<method>.json`` (``peak_memory_mb``).
        footer: Text under the figure (the :class:`FigureContext` line); None for none.

    Returns:
        The figure: two panels; every point's ``gid`` is its method.
    """
    methods = [m for m in order_methods(train) if m in test]
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (
        ("trainable_params", "Trainable parameters (log scale)", True),
        ("peak_memory_mb", "Peak memory while training (MB)", False),
    )
    for ax, (key, xlabel, log_x) in zip(axes, panels, strict=True):
        for method in methods:
            m = test[method]
            x = m["trainable_params"] if key == "trainable_params" else train[method].get(key)
            if x is None or (log_x and x <= 0):
                continue
            ci = m["macro_f1_ci"]
            yerr = [[m["macro_f1"] - ci["low"]], [ci["high"] - m["macro_f1"]]]
            bars = ax.errorbar(
                [x],
                [m["macro_f1"]],
                yerr=yerr,
                fmt="o",
                markersize=8,
                color=method_color(method),
                markeredgecolor="black",
                ecolor=method_color(method),
                elinewidth=1.5,
                capsize=4,
                label=method_label(method),
            )
            bars.lines[0].set_gid(method)
        if "base" in test:
            ax.axhline(test["base"]["macro_f1"], color=method_color("base"), linestyle="--", linewidth=1)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_ylabel("Test macro-F1 (95% CI)")
    axes[0].set_title("Quality vs trainable parameters")
    axes[1].set_title("Quality vs training memory")
    handles, labels = axes[0].get_legend_handles_labels()
    if "base" in test:
        handles.append(Line2D([], [], color=method_color("base"), linestyle="--"))
        labels.append(f"{method_label('base')}: {test['base']['macro_f1']:.3f}")
    fig.legend(handles, labels, loc="outside right center", frameon=False)
    fig.suptitle("What each method costs and what it gains (one training budget for all)")
    _footer(fig, footer)
    return fig


def render_figures(
    test: Mapping[str, Mapping[str, Any]],
    loss_curves: Mapping[str, Mapping[str, pd.DataFrame]],
    coverage: Mapping[str, pd.DataFrame],
    predictions: Mapping[str, pd.DataFrame],
    tau: float,
    bins: int,
    dpi: int,
    out_dir: Path,
    train: Mapping[str, Mapping[str, Any]] | None = None,
    context: FigureContext | None = None,
    labels: Sequence[str] = BINARY.labels,
) -> list[Path]:
    """Draw and save every figure of the plot stage.

    Args:
        test: ``eval.json["test"]``.
        loss_curves: Per trained method its train/val loss DataFrames.
        coverage: Per method its coverage sweep.
        predictions: Per method its per-example test predictions.
        tau: ``eval.json["tau"]``.
        bins: ``evaluate.calibration_bins``.
        dpi: ``plot.dpi``.
        out_dir: Where the PNGs go (``plots/figures``, under the project root).
        train: Per trained method its training metrics (peak memory); None for none.
        context: Model, seeds and training sizes for every figure's footer; None: model unknown.
        labels: The task's labels in column order (``eval.json["labels"]``; yes/no where absent).

    Returns:
        The written files, in :data:`~pubmedqa_peft.paths.FIGURE_NAMES` order.
    """
    context = context or FigureContext()
    every = order_methods(test)
    headline = [m for m in trained_vs_base() if m in test]
    shown = footprint_methods(test)
    trained = [m for m in order_methods(train or {}) if m in test]
    shown_labels = [label for label in DISPLAY_ORDER if label in labels]

    def on_test(methods: Sequence[str]) -> str:
        return context.evaluation(_n(test, methods))

    builders = {
        "accuracy_macro_f1": lambda: plot_metric_bars(
            test, headline, "Base model vs PEFT methods on the test split", footer=on_test(headline)
        ),
        "all_methods": lambda: plot_metric_bars(
            test, every, "All methods and baselines on the test split", footer=on_test(every)
        ),
        "footprint": lambda: plot_footprint(test, shown, footer=on_test(shown)),
        "cost_benefit": lambda: plot_cost_benefit(test, train or {}, footer=on_test(trained or every)),
        "loss_curves": lambda: plot_loss_curves(
            {m: loss_curves[m] for m in order_methods(loss_curves)}, footer=context.training()
        ),
        "latency": lambda: plot_latency(test, every, footer=on_test(every)),
        "confusion": lambda: plot_confusion(test, every, labels=shown_labels, footer=on_test(every)),
        "coverage_accuracy": lambda: plot_coverage_accuracy(
            {m: coverage[m] for m in every}, test, tau, footer=on_test(every)
        ),
        "reliability": lambda: plot_reliability(
            {m: predictions[m] for m in every}, bins, labels=labels, footer=on_test(every)
        ),
    }
    written = []
    for name in paths.FIGURE_NAMES:
        target = out_dir / paths.figure_file(name).name
        written.append(save_figure(builders[name](), target, dpi))
        log.info("figure %s written", target)
    return written
