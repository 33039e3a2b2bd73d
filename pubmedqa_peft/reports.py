"""The plot stage: read the train and evaluate outputs, write the figures and the Markdown reports.

Three parts:

* reading and checking the inputs (:func:`load_plot_inputs`): a missing file or a file
  that disagrees with ``metrics/eval.json`` stops the stage with a message naming the
  file and the stage to rerun;
* the reports: ``reports/summary.md`` (one table of every method and metric, links to the
  figures, provenance) and ``reports/examples.md`` (confident right and wrong answers per
  PEFT method, and the questions on which the methods disagree), both deterministic;
* :func:`run_plot_stage`, which ties them to :func:`pubmedqa_peft.plotting.render_figures`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pubmedqa_peft import paths
from pubmedqa_peft.config import Params
from pubmedqa_peft.files import read_jsonl, write_text
from pubmedqa_peft.methods import registry
from pubmedqa_peft.plotting import (
    FigureContext,
    method_label,
    order_methods,
    probability_columns,
    render_figures,
    trained_vs_base,
)
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import BINARY, Task

log = logging.getLogger(__name__)

_METRIC_KEYS = (
    "n",
    "accuracy",
    "accuracy_ci",
    "macro_f1",
    "macro_f1_ci",
    "confusion",
    "ece",
    "coverage",
    "latency_s",
    "trainable_params",
    "total_params",
)
# Largest distance from 1 accepted for a row of K probabilities: the CSV rounds each to 6 decimals.
_SUM_TOLERANCE = 1e-4
_COVERAGE_COLUMNS = ("tau", "coverage", "selective_accuracy")
_LOSS_COLUMNS = ("step", "loss")
_TAU_HEADER = ("Method", "τ (from val)", "Val coverage", "Val selective acc.", "Test coverage", "Test selective acc.")
_FIGURE_TITLES = {
    "accuracy_macro_f1": "Accuracy and macro-F1 with 95% CIs: base model vs PEFT methods",
    "all_methods": "Accuracy and macro-F1 with 95% CIs: all methods and baselines",
    "footprint": "Parameter footprint: trainable vs total parameters",
    "cost_benefit": "Test macro-F1 vs trainable parameters and vs peak training memory",
    "loss_curves": "Training and validation loss curves",
    "latency": "Batch-1 latency (median and p90)",
    "confusion": "Confusion matrices",
    "coverage_accuracy": "Coverage vs selective accuracy",
    "reliability": "Reliability diagrams (calibration)",
}


# --- reading the inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotInputs:
    """Everything the plot stage reads, checked against each other.

    Attributes:
        eval: ``metrics/eval.json``.
        train: Per trained method, ``metrics/train/<method>.json``.
        losses: Per trained method, ``{"train": DataFrame(step, loss), "val": DataFrame(step, loss)}``.
        coverage: Per method, the tau sweep (``tau``, ``coverage``, ``selective_accuracy``).
        predictions: Per method, the per-example test predictions, ordered by id.
        test_rows: The test split by id.
    """

    eval: dict[str, Any]
    train: dict[str, dict[str, Any]]
    losses: dict[str, dict[str, pd.DataFrame]]
    coverage: dict[str, pd.DataFrame]
    predictions: dict[str, pd.DataFrame]
    test_rows: dict[str, dict[str, Any]]

    @property
    def task(self) -> Task:
        """The task the metrics are for: ``eval.json["labels"]``, yes/no where absent."""
        return eval_task(self.eval)

    @property
    def test(self) -> dict[str, dict[str, Any]]:
        """``eval.json["test"]``: per method its test metrics."""
        return self.eval["test"]

    @property
    def trained(self) -> list[str]:
        """The trained methods present in ``eval.json``, in registry order."""
        return [m for m in registry.names() if m in self.test]


def _require(root: Path, rel: Path, stage: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise PipelineError(f"{rel}: not found; run `dvc repro {stage}` first")
    return path


def _read_json(root: Path, rel: Path, stage: str) -> dict[str, Any]:
    path = _require(root, rel, stage)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PipelineError(
            f"{rel}: not valid JSON ({err.msg}, line {err.lineno}); rerun `dvc repro {stage}`"
        ) from None
    if not isinstance(data, dict):
        raise PipelineError(f"{rel}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_table(root: Path, rel: Path, stage: str, columns: Sequence[str], sep: str = ",") -> pd.DataFrame:
    path = _require(root, rel, stage)
    try:
        df = pd.read_csv(path, sep=sep, dtype={"id": str, "label": str, "prediction": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PipelineError(f"{rel}: cannot be parsed as a table: {err}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PipelineError(f"{rel}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}")
    for col in columns:
        if col in ("id", "label", "prediction"):
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        # Empty cells are allowed only where the schema allows them (selective accuracy at zero coverage).
        bad = values.isna() & df[col].notna() if col == "selective_accuracy" else values.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0]) + 2  # +1 for the header, +1 for 1-based lines
            raise PipelineError(f"{rel}: line {row}: column {col} is not a number ({df[col].iloc[row - 2]!r})")
        df[col] = values
    return df


def eval_task(data: Mapping[str, Any]) -> Task:
    """The task of an ``eval.json``: its ``labels`` (column order), written for any task but yes/no.

    Raises:
        PipelineError: If ``labels`` is not a task's label set in column order.
    """
    labels = data.get("labels")
    if labels is None:  # the binary task's file has no "labels", as before there were other tasks
        return BINARY
    try:
        return Task(tuple(labels))
    except (TypeError, ValueError) as err:
        raise PipelineError(f"{paths.EVAL_METRICS}: 'labels' {labels!r}: {err}; rerun `dvc repro evaluate`") from None


def _check_eval(data: dict[str, Any]) -> None:
    rel = paths.EVAL_METRICS
    test = data.get("test")
    if not isinstance(test, dict) or not test:
        raise PipelineError(f"{rel}: no 'test' metrics; rerun `dvc repro evaluate`")
    if not isinstance(data.get("tau"), int | float):
        raise PipelineError(f"{rel}: 'tau' missing or not a number; rerun `dvc repro evaluate`")
    task = eval_task(data)
    for method, metrics in test.items():
        missing = [k for k in _METRIC_KEYS if k not in metrics]
        if missing:
            raise PipelineError(f"{rel}: test.{method} lacks {', '.join(missing)}; rerun `dvc repro evaluate`")
        # The figures draw one K×K matrix per method: every row and column must be one of the task's labels.
        conf = metrics["confusion"]
        if (
            not isinstance(conf, dict)
            or any(not isinstance(row, dict) or set(row) != set(task.labels) for row in conf.values())
            or set(conf) != set(task.labels)
        ):
            raise PipelineError(
                f"{rel}: test.{method}.confusion is not a matrix over the labels {list(task.display)}; "
                "rerun `dvc repro evaluate`"
            )
    if "base" not in test:
        raise PipelineError(f"{rel}: no 'base' method in test metrics; rerun `dvc repro evaluate`")


def _prediction_columns(task: Task) -> tuple[str, ...]:
    return ("id", "label", *probability_columns(task.labels), "prediction", "confidence")


def _check_predictions(
    method: str, df: pd.DataFrame, n: int, test_rows: Mapping[str, Any], task: Task = BINARY
) -> pd.DataFrame:
    rel = paths.predictions_file(method)
    stale = "the evaluate outputs are out of date; rerun `dvc repro evaluate`"
    if len(df) != n:
        raise PipelineError(f"{rel}: {len(df)} rows but {paths.EVAL_METRICS} says n = {n} for {method}; {stale}")
    for col in ("label", "prediction"):
        bad = ~df[col].isin(task.labels)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise PipelineError(f"{rel}: id {df['id'].iloc[i]}: {col} {df[col].iloc[i]!r} is not {task.answers_phrase}")
    columns = probability_columns(task.labels)
    probs = df[columns].to_numpy(dtype=float)
    outside = (probs < 0) | (probs > 1)
    off = np.abs(probs.sum(axis=1) - 1) > _SUM_TOLERANCE if len(columns) > 1 else np.zeros(len(df), dtype=bool)
    if outside.any() or off.any():
        i = int(np.flatnonzero(outside.any(axis=1) | off)[0])
        what = "a probability outside [0, 1]" if outside[i].any() else f"probabilities summing to {probs[i].sum():.6g}"
        raise PipelineError(f"{rel}: id {df['id'].iloc[i]}: {what}; {stale}")
    unknown = sorted(set(df["id"]) - set(test_rows))
    if unknown:
        test_file = paths.split_file("test")
        raise PipelineError(f"{rel}: {len(unknown)} id(s) not in {test_file}, e.g. {unknown[0]}; {stale}")
    if df["id"].duplicated().any():
        raise PipelineError(f"{rel}: id {df['id'][df['id'].duplicated()].iloc[0]} appears twice; {stale}")
    wrong_gold = df[df["label"] != df["id"].map(lambda i: test_rows[i]["label"])]
    if len(wrong_gold):
        raise PipelineError(f"{rel}: id {wrong_gold['id'].iloc[0]}: label differs from the test split; {stale}")
    return df.sort_values("id", kind="stable").reset_index(drop=True)


def _check_coverage(method: str, df: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Refuse a τ sweep made for another task: it starts at 1/K, where every question is answered."""
    first = float(df["tau"].min()) if len(df) else math.nan
    # Written with 2 decimals (0.33 for 1/3).
    if not abs(first - 1 / task.k) <= 0.006:
        raise PipelineError(
            f"{paths.coverage_file(method)}: the τ sweep starts at {first:.2f}, not at 1/{task.k} as the "
            f"{task.k}-label task's does; the evaluate outputs are out of date; rerun `dvc repro evaluate`"
        )
    return df


def load_plot_inputs(root: Path = Path(".")) -> PlotInputs:
    """Read and cross-check every input of the plot stage.

    Args:
        root: The project root.

    Returns:
        The inputs.

    Raises:
        PipelineError: Naming the file (and the stage to rerun) if a file is missing, malformed,
            or disagrees with ``metrics/eval.json`` or the test split.
    """
    data = _read_json(root, paths.EVAL_METRICS, "evaluate")
    _check_eval(data)
    test, task = data["test"], eval_task(data)
    test_file = paths.split_file("test")
    try:
        rows = read_jsonl(_require(root, test_file, "split"))
    except ValueError as err:
        raise PipelineError(str(err)) from None
    test_rows = {str(r.get("id")): r for r in rows}
    predictions, coverage = {}, {}
    for method in order_methods(test):
        df = _read_table(root, paths.predictions_file(method), "evaluate", _prediction_columns(task))
        predictions[method] = _check_predictions(method, df, int(test[method]["n"]), test_rows, task)
        df = _read_table(root, paths.coverage_file(method), "evaluate", _COVERAGE_COLUMNS)
        coverage[method] = _check_coverage(method, df, task)
    train, losses = {}, {}
    for method in (m for m in registry.names() if m in test):
        stage = f"train_{method}"
        train[method] = _read_json(root, paths.train_metrics_file(method), stage)
        losses[method] = {
            "train": _read_table(root, paths.train_loss_file(method), stage, _LOSS_COLUMNS, sep="\t"),
            "val": _read_table(root, paths.val_loss_file(method), stage, _LOSS_COLUMNS, sep="\t"),
        }
    log.info("read %s: %d methods, %d test examples", paths.EVAL_METRICS, len(test), len(test_rows))
    return PlotInputs(data, train, losses, coverage, predictions, test_rows)


# --- formatting helpers -----------------------------------------------------------------------------------------


def shorten(text: str, limit: int) -> str:
    """Collapse whitespace and cut ``text`` to at most ``limit`` characters at a word boundary, adding "…".

    Args:
        text: Any text.
        limit: Maximum length of the result, ellipsis included.

    Returns:
        The text, unchanged apart from whitespace if it fits.
    """
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if space >= 0.6 * len(cut):  # avoid cutting a word in half unless it would waste most of the budget
        cut = cut[:space]
    return cut.rstrip(" ,;:.") + "…"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def md_escape(text: str) -> str:
    """Escape Markdown syntax in free text (questions, contexts) so it renders literally, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", str(text)).strip())


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell: one line, every pipe escaped (once)."""
    return re.sub(r"(?<!\\)\|", r"\\|", re.sub(r"\s+", " ", str(text))).strip()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A Markdown table; columns flagged in ``right`` are right-aligned (numbers)."""
    right = right or [False] * len(header)
    align = ["---:" if r else ":---" for r in right]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _pvalue(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _params(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _pct(pct: float) -> str:
    return f"{pct:.3g}%" if pct else "0%"


def _rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


# --- summary.md -------------------------------------------------------------------------------------------------


def _metrics_row(method: str, m: Mapping[str, Any], best: Mapping[str, float]) -> list[str]:
    def with_ci(key: str) -> str:
        text = f"{m[key]:.3f} [{m[f'{key}_ci']['low']:.3f}, {m[f'{key}_ci']['high']:.3f}]"
        return f"**{text}**" if math.isclose(m[key], best[key]) else text

    total = m["total_params"]
    footprint = f"{_params(m['trainable_params'])} / {_params(total)} ({_pct(m.get('trainable_pct', 0.0))})"
    lat = m["latency_s"]
    return [
        f"`{method}`",
        with_ci("accuracy"),
        with_ci("macro_f1"),
        _pvalue(m.get("mcnemar_p_vs_base")),
        _num(m["coverage"], 2),
        _num(m.get("selective_accuracy")),
        _num(m["ece"]),
        _num(m.get("roc_auc")),
        footprint if total else "0 (no model)",
        f"{_ms(lat['median'])} / {_ms(lat['p90'])}",
        _rate(m.get("throughput_eps")),
    ]


def _config_section(doc: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``provenance.config.<section>`` of a metrics file; empty where a level is missing (older files)."""
    config = (doc.get("provenance") or {}).get("config") or {}
    return config.get(section) or {}


def _joined(values: Sequence[Any]) -> str | None:
    """Distinct values, sorted and joined by "/" ("42", or "42/7" where runs disagree); None for none."""
    distinct = sorted({str(v) for v in values if v is not None}, key=lambda v: (len(v), v))
    return "/".join(distinct) or None


def _train_seeds(train: Mapping[str, Any]) -> str | None:
    """``train.seeds`` as a footer shows it ("42", "1, 2, 3"); older runs recorded one ``seed``."""
    seeds = train.get("seeds", [train["seed"]] if "seed" in train else None)
    return None if seeds is None else ", ".join(str(s) for s in seeds)


def figure_context(inputs: PlotInputs) -> FigureContext:
    """What every figure's footer states: the model, the seeds, the training and validation sizes.

    Args:
        inputs: The stage inputs.

    Returns:
        The context; a field the metrics files do not record is None (left out of the footer).
    """
    runs = list(inputs.train.values())
    return FigureContext(
        model=str(_config_section(inputs.eval, "model").get("name") or "unknown model"),
        train_seed=_joined([_train_seeds(_config_section(t, "train")) for t in runs]),
        eval_seed=_joined([_config_section(inputs.eval, "evaluate").get("seed")]),
        train_n=_joined([t.get("train_examples") for t in runs]),
        val_n=_joined([t.get("val_examples") for t in runs]),
    )


def _provenance_line(inputs: PlotInputs, bins: int) -> str:
    prov = inputs.eval.get("provenance") or {}
    model = _config_section(inputs.eval, "model").get("name", "unknown")
    ns = sorted({int(m["n"]) for m in inputs.test.values()})
    revision = prov.get("git_revision", "unknown")
    return (
        f"Generated by the `plot` stage from `{paths.EVAL_METRICS}` (git revision `{revision}` of the evaluate run; "
        f"model `{model}`; test n = {'/'.join(map(str, ns))}; "
        f"τ = {inputs.eval['tau']:.2f}; calibration bins = {bins})."
    )


def _seeds_section(test: Mapping[str, Mapping[str, Any]], methods: Sequence[str]) -> list[str]:
    """Test accuracy and macro-F1 per training seed, with mean ± sample standard deviation."""
    seeds = list(test[methods[0]]["seeds"])
    header = ["Method", "Accuracy mean ± std", "Macro-F1 mean ± std", *(f"Seed {s}: acc. / F1" for s in seeds)]
    rows = [
        [
            f"`{m}`",
            f"{test[m]['accuracy_mean']:.3f} ± {test[m]['accuracy_std']:.3f}",
            f"{test[m]['macro_f1_mean']:.3f} ± {test[m]['macro_f1_std']:.3f}",
            *(f"{test[m]['seeds'][s]['accuracy']:.3f} / {test[m]['seeds'][s]['macro_f1']:.3f}" for s in seeds),
        ]
        for m in methods
    ]
    return [
        f"## Across {len(seeds)} training seeds",
        "",
        "Each trained method was trained once per seed of `train.seeds` on the same data; the tables above show "
        "the first seed's run. Standard deviations are sample standard deviations (n − 1).",
        "",
        _table(header, rows, [False] + [True] * (len(header) - 1)),
        "",
    ]


def summary_markdown(inputs: PlotInputs, bins: int, figures: Mapping[str, Path]) -> str:
    """The text of ``reports/summary.md``.

    Args:
        inputs: The stage inputs.
        bins: ``evaluate.calibration_bins`` (stated in the provenance line).
        figures: Figure name -> PNG path relative to the project root.

    Returns:
        Markdown: metrics table, training table, tau-target table, figure links, provenance.
    """
    test, task = inputs.test, inputs.task
    methods = order_methods(test)
    tau = inputs.eval["tau"]
    best = {k: max(m[k] for m in test.values()) for k in ("accuracy", "macro_f1")}
    header = [
        "Method",
        "Accuracy [95% CI]",
        "Macro-F1 [95% CI]",
        "McNemar p vs base",
        f"Coverage @ τ={tau:.2f}",
        f"Selective acc. @ τ={tau:.2f}",
        "ECE",
        "ROC AUC" if task.binary else "ROC AUC (one-vs-rest macro)",
        "Trainable / total params (%)",
        "Latency median / p90 (ms)",
        "Throughput (ex/s)",
    ]
    rows = [_metrics_row(m, test[m], best) for m in methods]
    out = [
        "# PubMedQA PEFT comparison: summary",
        "",
        _provenance_line(inputs, bins),
        "",
        *([] if task.binary else [_task_line(inputs), ""]),
        "## Test metrics, all methods",
        "",
        "Best accuracy and macro-F1 in **bold**. CIs are 95% bootstrap intervals; McNemar's exact test compares each "
        "method's right/wrong answers with the base model's on the same questions. Coverage is the share of test "
        "questions answered with confidence ≥ τ, selective accuracy the accuracy on those. Latency is per request "
        "at batch size 1; throughput is batched.",
        "",
        _table(header, rows, [False] + [True] * (len(header) - 1)),
        "",
        "Methods: " + "; ".join(f"`{m}` = {method_label(m)}" for m in methods) + ".",
        "",
    ]
    if not task.binary:
        out += _per_class_section(inputs, methods)
    seeded = [m for m in methods if test[m].get("seeds")]
    if seeded:
        out += _seeds_section(test, seeded)
    if inputs.train:
        out += ["## Training cost of the PEFT methods", "", _training_table(inputs), ""]
    target = inputs.eval.get("target_accuracy")
    tau_rows = [_tau_row(m, test[m]["tau_target"]) for m in methods if isinstance(test[m].get("tau_target"), dict)]
    if tau_rows and target is not None:
        out += [
            f"## Threshold for a target accuracy of {target:.2f}",
            "",
            f"τ is picked on the validation split as the lowest threshold whose selective accuracy reaches "
            f"{target:.2f}, then applied unchanged to the test split (— where no threshold reaches it).",
            "",
            _table(_TAU_HEADER, tau_rows, [False] + [True] * (len(_TAU_HEADER) - 1)),
            "",
        ]
    out += ["## Figures", ""]
    for name, path in figures.items():
        rel = Path(os.path.relpath(path, paths.REPORTS_DIR)).as_posix()
        out.append(f"- [{_FIGURE_TITLES.get(name, name)}]({rel})")
    out += ["", "Per-example answers: [examples.md](examples.md).", ""]
    return "\n".join(out)


def _gold_counts(inputs: PlotInputs) -> dict[str, int]:
    """Test questions per gold label, in display order."""
    labels = [row.get("label") for row in inputs.test_rows.values()]
    return {label: labels.count(label) for label in inputs.task.display}


def _task_line(inputs: PlotInputs) -> str:
    """What a K-label summary's numbers mean (the binary summary needs no such line)."""
    task = inputs.task
    gold = ", ".join(f"{label} {n}" for label, n in _gold_counts(inputs).items())
    return (
        f"Task: {task.k} answers ({task.answers_phrase}); test questions by gold answer: {gold}. Macro-F1 is the "
        f"mean F1 of the {task.k} classes; confidence is the top probability (that of the predicted answer, "
        f"from 1/{task.k}), which ECE, coverage and τ use; ROC AUC is the one-vs-rest mean over the classes."
    )


def _per_class_section(inputs: PlotInputs, methods: Sequence[str]) -> list[str]:
    """Precision and recall of every class per method, from ``eval.json``; the counts from its confusion matrix."""
    labels = inputs.task.display
    header = ["Method", *(f"{label} {what}" for label in labels for what in ("precision", "recall", "predicted"))]
    rows = []
    for method in methods:
        m = inputs.test[method]
        conf = m["confusion"]
        row = [f"`{method}`"]
        for label in labels:
            predicted = sum(conf[gold][label] for gold in conf)
            row += [
                _num((m.get("precision") or {}).get(label)),
                _num((m.get("recall") or {}).get(label)),
                str(predicted),
            ]
        rows.append(row)
    return [
        "## Per-class precision and recall (test)",
        "",
        "Precision: the share of a method's answers of that class that are right; recall: the share of the "
        "questions of that class answered with it; predicted: how many times the method gave that answer "
        "(see the confusion matrices figure for the full matrices).",
        "",
        _table(header, rows, [False] + [True] * (len(header) - 1)),
        "",
    ]


def _training_table(inputs: PlotInputs) -> str:
    rows = []
    for method in inputs.trained:
        t = inputs.train[method]
        rows.append(
            [
                f"`{method}`",
                f"{t.get('epochs', float('nan')):g}",
                str(t.get("steps", "—")),
                _num(t.get("train_time_s"), 0),
                _num(t.get("train_examples_per_s"), 2),
                _num(t.get("train_real_tokens_per_s"), 0),
                _num(t.get("peak_memory_mb"), 0),
                _num(t.get("final_train_loss")),
                _num(t.get("final_val_loss")),
                _bytes(t.get("size_on_disk_bytes")),
            ]
        )
    header = [
        "Method",
        "Epochs",
        "Steps",
        "Train time (s)",
        "Examples/s",
        "Tokens/s",
        "Peak memory (MB)",
        "Final train loss",
        "Final val loss",
        "Size on disk",
    ]
    return _table(header, rows, [False] + [True] * 9)


def _bytes(n: float | None) -> str:
    """A file size for people: 46.8 KB, 1.40 MB, 308 MB (decimal units, as file managers show)."""
    if n is None:
        return "—"
    for div, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} B"


def _tau_row(method: str, t: Mapping[str, Any]) -> list[str]:
    return [
        f"`{method}`",
        _num(t.get("tau"), 2),
        _num(t.get("val_coverage"), 2),
        _num(t.get("val_selective_accuracy")),
        _num(t.get("test_coverage"), 2),
        _num(t.get("test_selective_accuracy")),
    ]


# --- examples.md ------------------------------------------------------------------------------------------------


def select_examples(predictions: pd.DataFrame, correct: bool, k: int) -> pd.DataFrame:
    """The ``k`` most confident correct (or incorrect) predictions; ties broken by id, so the choice is stable.

    Args:
        predictions: Per-example predictions (``id``, ``label``, ``prediction``, ``confidence``).
        correct: Pick right (True) or wrong (False) answers.
        k: How many.

    Returns:
        Up to ``k`` rows, most confident first.
    """
    right = predictions["label"] == predictions["prediction"]
    chosen = predictions[right if correct else ~right]
    return chosen.sort_values(["confidence", "id"], ascending=[False, True], kind="stable").head(k)


def disagreements(predictions: Mapping[str, pd.DataFrame], methods: Sequence[str]) -> pd.DataFrame:
    """Test questions on which the given methods do not all give the same answer.

    Args:
        predictions: Per method its per-example predictions.
        methods: The methods to compare (at least two).

    Returns:
        One row per such question, ordered by id: ``id``, ``label``, then ``<method>`` (answer)
        and ``<method>_confidence`` per method.
    """
    merged: pd.DataFrame | None = None
    for method in methods:
        df = predictions[method][["id", "label", "prediction", "confidence"]].rename(
            columns={"prediction": method, "confidence": f"{method}_confidence"}
        )
        merged = df if merged is None else merged.merge(df.drop(columns="label"), on="id", how="inner")
    if merged is None:
        return pd.DataFrame(columns=["id", "label"])
    split = merged[list(methods)].nunique(axis=1) > 1
    return merged[split].sort_values("id", kind="stable").reset_index(drop=True)


def _example_block(rank: int, row: pd.Series, test_row: Mapping[str, Any], context_chars: int) -> list[str]:
    verdict = "right" if row["label"] == row["prediction"] else "wrong"
    return [
        f"{rank}. **id {row['id']}** — gold **{row['label']}**, predicted **{row['prediction']}** ({verdict}), "
        f"confidence {row['confidence']:.3f}",
        "",
        f"   > **Question:** {md_escape(str(test_row.get('question', '')))}",
        "   >",
        f"   > **Context:** {md_escape(shorten(str(test_row.get('context', '')), context_chars))}",
        "",
    ]


def examples_markdown(inputs: PlotInputs, per_method: int, context_chars: int) -> str:
    """The text of ``reports/examples.md``.

    Args:
        inputs: The stage inputs.
        per_method: Correct and incorrect examples shown per PEFT method (``plot.examples_per_method``).
        context_chars: Context characters shown per example (``plot.context_chars``).

    Returns:
        Markdown: per PEFT method its most confident right and wrong answers, then the
        questions on which base and the PEFT methods disagree.
    """
    out = [
        "# PubMedQA PEFT comparison: example predictions",
        "",
        f"Test-split answers of the PEFT methods. Per method, the {per_method} most confident correct and the "
        f"{per_method} most confident incorrect answers (ties broken by id); contexts cut to {context_chars} "
        "characters. Confidence is the probability the method gives its predicted answer.",
        "",
    ]
    for method in inputs.trained:
        df = inputs.predictions[method]
        m = inputs.test[method]
        out += [
            f"## `{method}` ({method_label(method)})",
            "",
            f"Test accuracy {m['accuracy']:.3f}: {int((df['label'] == df['prediction']).sum())} of {len(df)} right.",
            "",
        ]
        for correct, title in ((True, "Correct, most confident"), (False, "Incorrect, most confident")):
            out += [f"### {title}", ""]
            chosen = select_examples(df, correct, per_method)
            if chosen.empty:
                out += ["None.", ""]
            for rank, (_, row) in enumerate(chosen.iterrows(), start=1):
                out += _example_block(rank, row, inputs.test_rows[row["id"]], context_chars)
    compared = [m for m in trained_vs_base() if m in inputs.predictions]
    split = disagreements(inputs.predictions, compared)
    n = len(inputs.predictions["base"])
    out += [
        "## Where the methods disagree",
        "",
        f"Test questions on which {', '.join(f'`{m}`' for m in compared)} do not all give the same answer: "
        f"{len(split)} of {n}. Each cell shows the answer and its confidence; ✓ marks a right answer.",
        "",
    ]
    if len(split):
        header = ["id", "Question", "Gold", *compared]
        rows = []
        for _, row in split.iterrows():
            question = md_escape(shorten(str(inputs.test_rows[row["id"]].get("question", "")), 120))
            cells = [f"{row[m]} {row[f'{m}_confidence']:.2f}{' ✓' if row[m] == row['label'] else ''}" for m in compared]
            rows.append([row["id"], question, row["label"], *cells])
        out += [_table(header, rows), ""]
    return "\n".join(out)


# --- the stage --------------------------------------------------------------------------------------------------


def run_plot_stage(params: Params, root: Path = Path(".")) -> list[Path]:
    """Write every figure and both reports of the plot stage.

    Args:
        params: The validated parameters (``plot.*``, ``evaluate.calibration_bins``).
        root: The project root.

    Returns:
        The written files (PNGs, then summary.md and examples.md), relative to ``root``'s paths.

    Raises:
        PipelineError: If an input is missing or inconsistent.
    """
    inputs = load_plot_inputs(root)
    bins = params.evaluate.calibration_bins
    figures = render_figures(
        inputs.test,
        inputs.losses,
        inputs.coverage,
        inputs.predictions,
        tau=float(inputs.eval["tau"]),
        bins=bins,
        dpi=params.plot.dpi,
        out_dir=root / paths.FIGURES_DIR,
        train=inputs.train,
        context=figure_context(inputs),
        labels=inputs.task.labels,
    )
    rel_figures = {name: paths.figure_file(name) for name in paths.FIGURE_NAMES}
    write_text(root / paths.SUMMARY_REPORT, summary_markdown(inputs, bins, rel_figures))
    log.info("report %s written", paths.SUMMARY_REPORT)
    write_text(
        root / paths.EXAMPLES_REPORT,
        examples_markdown(inputs, params.plot.examples_per_method, params.plot.context_chars),
    )
    log.info("report %s written", paths.EXAMPLES_REPORT)
    return [*figures, root / paths.SUMMARY_REPORT, root / paths.EXAMPLES_REPORT]
