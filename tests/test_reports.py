"""Tests of the plot stage's input checks and of the Markdown reports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_outputs import MODEL, SEED, TRAIN_EXAMPLES, VAL_EXAMPLES, fake_methods, write_fake_workspace

from pubmedqa_peft import paths, plotting, reports
from pubmedqa_peft.config import Params
from pubmedqa_peft.files import read_jsonl
from pubmedqa_peft.plotting import FigureContext
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import BINARY, THREE_LABELS

PROJECT = Path(__file__).resolve().parents[1]
METHODS = fake_methods()
FIGURES = {name: paths.figure_file(name) for name in paths.FIGURE_NAMES}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    write_fake_workspace(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> reports.PlotInputs:
    root = tmp_path_factory.mktemp("ws")
    write_fake_workspace(root)
    return reports.load_plot_inputs(root)


def _table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    """Cells of the table rows whose first cell is ``first_cell`` (escaped pipes kept inside cells)."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if cells and cells[0] == first_cell:
                rows.append(cells)
    return rows


# --- inputs -----------------------------------------------------------------------------------------------------


def test_inputs_are_read_for_every_method(inputs) -> None:
    assert set(inputs.predictions) == set(inputs.coverage) == set(METHODS)
    assert inputs.trained == ["prompt", "prefix", "lora"]
    assert set(inputs.losses) == set(inputs.train) == {"prompt", "prefix", "lora"}
    for df in inputs.predictions.values():
        assert list(df["id"]) == sorted(df["id"])
        assert df["id"].map(type).eq(str).all()  # ids stay strings (no lost leading zeros)
    assert inputs.coverage["majority"]["selective_accuracy"].isna().any()


@pytest.mark.parametrize(
    ("missing", "stage"),
    [
        (paths.EVAL_METRICS, "evaluate"),
        (paths.predictions_file("fewshot_k5"), "evaluate"),
        (paths.coverage_file("lora"), "evaluate"),
        (paths.train_metrics_file("prefix"), "train_prefix"),
        (paths.val_loss_file("lora"), "train_lora"),
        (paths.split_file("test"), "split"),
    ],
)
def test_a_missing_input_names_the_file_and_the_stage(workspace: Path, missing: Path, stage: str) -> None:
    (workspace / missing).unlink()
    with pytest.raises(PipelineError) as err:
        reports.load_plot_inputs(workspace)
    assert str(missing) in str(err.value)
    assert f"dvc repro {stage}" in str(err.value)


def test_predictions_out_of_step_with_eval_json_are_refused(workspace: Path) -> None:
    path = workspace / paths.predictions_file("lora")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    with pytest.raises(PipelineError, match=r"plots/eval/predictions/lora.csv: 88 rows .* n = 89"):
        reports.load_plot_inputs(workspace)


def test_a_bad_answer_in_predictions_names_the_id(workspace: Path) -> None:
    path = workspace / paths.predictions_file("prompt")
    df = pd.read_csv(path, dtype=str)
    df.loc[5, "prediction"] = "maybe"
    df.to_csv(path, index=False)
    with pytest.raises(PipelineError, match=rf"prompt.csv: id {df.loc[5, 'id']}: prediction 'maybe' is not yes or no"):
        reports.load_plot_inputs(workspace)


def test_a_non_numeric_loss_names_the_line(workspace: Path) -> None:
    path = workspace / paths.train_loss_file("prompt")
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tnan?\n"
    path.write_text("".join(lines))
    with pytest.raises(PipelineError, match=r"loss.tsv: line 4: column loss is not a number"):
        reports.load_plot_inputs(workspace)


def test_eval_json_without_a_metric_is_refused(workspace: Path) -> None:
    path = workspace / paths.EVAL_METRICS
    data = json.loads(path.read_text())
    del data["test"]["lora"]["latency_s"]
    path.write_text(json.dumps(data))
    with pytest.raises(PipelineError, match=r"test.lora lacks latency_s"):
        reports.load_plot_inputs(workspace)


def test_the_stage_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    shutil.copy(PROJECT / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.plot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "metrics/eval.json: not found; run `dvc repro evaluate` first" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / paths.FIGURES_DIR).exists() and not (tmp_path / paths.REPORTS_DIR).exists()


# --- summary.md -------------------------------------------------------------------------------------------------


def test_summary_has_one_row_per_method_with_its_numbers(inputs) -> None:
    text = reports.summary_markdown(inputs, 10, FIGURES)
    for method in METHODS:
        (row,) = _table_rows(text, f"`{method}`")[:1]
        m = inputs.test[method]
        assert f"{m['accuracy']:.3f} [{m['accuracy_ci']['low']:.3f}, {m['accuracy_ci']['high']:.3f}]" in row[1]
        assert f"{m['ece']:.3f}" == row[6]
    header = next(line for line in text.splitlines() if line.startswith("| Method | Accuracy"))
    for column in ("Macro-F1", "McNemar", "Coverage", "Selective", "ECE", "AUC", "params", "Latency", "Throughput"):
        assert column in header
    assert _table_rows(text, "`base`")[0][3] == "—"  # no McNemar test of base against itself
    assert _table_rows(text, "`lora`")[0][3] != "—"


def test_summary_bolds_the_best_accuracy(inputs) -> None:
    text = reports.summary_markdown(inputs, 10, FIGURES)
    best = max(inputs.test, key=lambda m: inputs.test[m]["accuracy"])
    assert _table_rows(text, f"`{best}`")[0][1].startswith("**")
    worst = min(inputs.test, key=lambda m: inputs.test[m]["accuracy"])
    assert not _table_rows(text, f"`{worst}`")[0][1].startswith("**")


def test_summary_links_every_figure_relative_to_reports(inputs) -> None:
    text = reports.summary_markdown(inputs, 10, FIGURES)
    links = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert links == [f"../plots/figures/{name}.png" for name in paths.FIGURE_NAMES]
    assert all((paths.REPORTS_DIR / link).resolve() == FIGURES[Path(link).stem].resolve() for link in links)


def test_summary_states_provenance(inputs) -> None:
    text = reports.summary_markdown(inputs, 10, FIGURES)
    prov = inputs.eval["provenance"]
    assert prov["git_revision"] in text
    assert prov["config"]["model"]["name"] in text


def test_figure_context_comes_from_the_metrics_files(inputs) -> None:
    assert reports.figure_context(inputs) == FigureContext(
        model=MODEL, train_seed=str(SEED), eval_seed=str(SEED), train_n=str(TRAIN_EXAMPLES), val_n=str(VAL_EXAMPLES)
    )


def test_figure_context_of_files_without_provenance_or_with_differing_runs(inputs) -> None:
    # Older metrics files lack provenance: the figures still get a footer, without what is unknown.
    bare_eval = {k: v for k, v in inputs.eval.items() if k != "provenance"}
    bare_train = {
        m: {k: v for k, v in t.items() if k not in ("provenance", "train_examples")} for m, t in inputs.train.items()
    }
    bare = reports.PlotInputs(bare_eval, bare_train, {}, {}, {}, {})
    assert reports.figure_context(bare) == FigureContext(model="unknown model", val_n=str(VAL_EXAMPLES))
    # Runs that disagree (one retrained with another seed) show every value, not one of them.
    runs = dict(inputs.train)
    runs["lora"] = {**runs["lora"], "provenance": {"config": {"train": {"seed": 7}}}}
    mixed = reports.PlotInputs(inputs.eval, runs, {}, {}, {}, {})
    assert reports.figure_context(mixed).train_seed == f"7/{SEED}"


def test_summary_training_table_lists_the_peft_methods(inputs) -> None:
    text = reports.summary_markdown(inputs, 10, FIGURES)
    for method in ("prompt", "prefix", "lora"):
        rows = _table_rows(text, f"`{method}`")
        assert len(rows) == 3  # metrics, training cost, tau target
        assert str(inputs.train[method]["steps"]) in rows[1]


# --- examples.md ------------------------------------------------------------------------------------------------


def test_select_examples_takes_the_most_confident_and_breaks_ties_by_id() -> None:
    df = pd.DataFrame(
        {
            "id": ["5", "3", "4", "1", "2"],
            "label": ["yes", "yes", "no", "no", "yes"],
            "prediction": ["yes", "yes", "no", "yes", "no"],
            "confidence": [0.9, 0.9, 0.95, 0.6, 0.8],
        }
    )
    assert list(reports.select_examples(df, True, 2)["id"]) == ["4", "3"]
    assert list(reports.select_examples(df, True, 10)["id"]) == ["4", "3", "5"]
    assert list(reports.select_examples(df, False, 10)["id"]) == ["2", "1"]


def test_disagreements_are_questions_with_different_answers() -> None:
    def frame(preds: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"id": ["a", "b", "c"], "label": ["yes"] * 3, "prediction": preds, "confidence": 0.7})

    preds = {"base": frame(["yes", "no", "yes"]), "lora": frame(["yes", "yes", "no"]), "prompt": frame(["yes"] * 3)}
    split = reports.disagreements(preds, ["base", "prompt", "lora"])
    assert list(split["id"]) == ["b", "c"]
    assert list(split["lora"]) == ["yes", "no"] and list(split["base"]) == ["no", "yes"]


def test_examples_cover_each_peft_method_and_are_deterministic(inputs) -> None:
    text = reports.examples_markdown(inputs, 3, 120)
    shuffled = reports.PlotInputs(
        inputs.eval,
        inputs.train,
        inputs.losses,
        inputs.coverage,
        {m: df.sample(frac=1, random_state=1) for m, df in inputs.predictions.items()},
        inputs.test_rows,
    )
    assert reports.examples_markdown(shuffled, 3, 120) == text
    for method in ("prompt", "prefix", "lora"):
        section = text.split(f"## `{method}`")[1].split("\n## ")[0]
        correct, wrong = section.split("### Incorrect")
        assert correct.count("(right)") == 3 and wrong.count("(wrong)") == 3
        shown = re.findall(r"\*\*id (\d+)\*\*", correct)
        expected = reports.select_examples(inputs.predictions[method], True, 3)["id"].tolist()
        assert shown == expected


def test_examples_cut_contexts_and_list_every_disagreement(inputs) -> None:
    text = reports.examples_markdown(inputs, 2, 80)
    contexts = re.findall(r"\*\*Context:\*\* (.*)", text)
    assert contexts and all(len(c.replace("\\", "")) <= 80 for c in contexts)
    compared = ["base", "prompt", "prefix", "lora"]
    split = reports.disagreements(inputs.predictions, compared)
    assert f"{len(split)} of {len(inputs.predictions['base'])}" in text
    for pmid in split["id"]:
        rows = _table_rows(text, pmid)
        assert len(rows) == 1 and len(rows[0]) == 3 + len(compared), pmid


def test_shorten() -> None:
    assert reports.shorten("short  text\n here", 50) == "short text here"
    cut = reports.shorten("word " * 40, 33)
    assert len(cut) <= 33 and cut.endswith("…") and not cut.endswith(" …")
    assert reports.shorten("x" * 100, 10) == "x" * 9 + "…"


def test_markdown_special_characters_are_escaped() -> None:
    assert reports.md_escape("p < 0.05 | *not* _bold_") == r"p \< 0.05 \| \*not\* \_bold\_"


def test_run_plot_stage_writes_both_reports_reproducibly(workspace: Path, monkeypatch) -> None:
    # Figures are covered by test_plotting; here only the reports matter, so skip the drawing.
    monkeypatch.setattr(reports, "render_figures", lambda *args, **kwargs: [])
    params = Params.model_validate({"plot": {"examples_per_method": 1}})
    reports.run_plot_stage(params, workspace)
    first = {p: (workspace / p).read_bytes() for p in (paths.SUMMARY_REPORT, paths.EXAMPLES_REPORT)}
    reports.run_plot_stage(params, workspace)
    assert {p: (workspace / p).read_bytes() for p in first} == first
    # Nothing but the two reports (no temporary files left behind by the atomic writes).
    assert sorted(p.name for p in (workspace / paths.REPORTS_DIR).iterdir()) == ["examples.md", "summary.md"]
    examples = first[paths.EXAMPLES_REPORT].decode()
    assert examples.count("(right)") == 3 and examples.count("(wrong)") == 3


def test_training_table_shows_each_method_size_on_disk(inputs) -> None:
    from pubmedqa_peft.reports import _training_table

    table = _training_table(inputs)
    assert "Size on disk" in table.splitlines()[0]
    for method in inputs.trained:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{method}`"))
        size = inputs.train[method]["size_on_disk_bytes"]
        assert row.rstrip(" |").endswith(f"{size / 1e3:.3g} KB")


# --- the three-label task (yes/no/maybe) ------------------------------------------------------------------------


@pytest.fixture
def workspace3(tmp_path: Path) -> Path:
    write_fake_workspace(tmp_path, labels=THREE_LABELS.labels)
    return tmp_path


@pytest.fixture(scope="module")
def inputs3(tmp_path_factory: pytest.TempPathFactory) -> reports.PlotInputs:
    root = tmp_path_factory.mktemp("ws3")
    write_fake_workspace(root, labels=THREE_LABELS.labels)
    return reports.load_plot_inputs(root)


def test_the_task_comes_from_eval_json(inputs, inputs3) -> None:
    assert inputs.task == BINARY and "labels" not in inputs.eval
    assert inputs3.task == THREE_LABELS
    for df in inputs3.predictions.values():
        assert {"p_no", "p_yes", "p_maybe"} <= set(df.columns)
    answers = pd.concat([df["prediction"] for df in inputs3.predictions.values()])
    assert set(answers) == {"yes", "no", "maybe"}  # a maybe answer is accepted, not refused


def _edit_predictions(root: Path, method: str, row: int, **cells: str) -> str:
    """Overwrite cells of one row of a method's predictions CSV; returns that row's id."""
    path = root / paths.predictions_file(method)
    df = pd.read_csv(path, dtype=str)
    for column, value in cells.items():
        df.loc[row, column] = value
    df.to_csv(path, index=False)
    return df.loc[row, "id"]


def _from_binary(root: Path, rel: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Replace ``rel`` under ``root`` by the file a binary (yes/no) evaluate writes."""
    binary = tmp_path_factory.mktemp("binary")
    write_fake_workspace(binary)
    shutil.copy(binary / rel, root / rel)


@pytest.mark.parametrize(
    ("labels", "method", "cells", "message"),
    [
        (THREE_LABELS.labels, "prompt", {"prediction": "perhaps"}, "prediction 'perhaps' is not yes, no or maybe"),
        (THREE_LABELS.labels, "lora", {"p_maybe": "0.9999"}, r"probabilities summing to 1\.\d+"),
        (BINARY.labels, "base", {"p_yes": "1.5"}, r"a probability outside \[0, 1\]"),
    ],
    ids=["maybe-task-unknown-answer", "maybe-task-sum", "binary-range"],
)
def test_a_bad_prediction_names_the_file_and_the_id(
    tmp_path: Path, labels: tuple[str, ...], method: str, cells: dict[str, str], message: str
) -> None:
    write_fake_workspace(tmp_path, labels=labels)
    pmid = _edit_predictions(tmp_path, method, 3, **cells)
    with pytest.raises(PipelineError, match=rf"{method}.csv: id {pmid}: {message}"):
        reports.load_plot_inputs(tmp_path)


def test_probabilities_rounded_as_evaluate_writes_them_are_accepted(workspace3: Path) -> None:
    # Six decimals each: a row may sum to 1.000002.
    _edit_predictions(workspace3, "lora", 0, p_no="0.123457", p_yes="0.123457", p_maybe="0.753088")
    assert reports.load_plot_inputs(workspace3).predictions["lora"]["p_maybe"].max() > 0


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        (paths.predictions_file("lora"), r"lora.csv: missing column\(s\) p_no, p_maybe"),
        (paths.coverage_file("prefix"), r"prefix.csv: the τ sweep starts at 0.50, not at 1/3"),
    ],
)
def test_a_binary_evaluate_file_beside_a_three_label_eval_json_is_refused(
    workspace3: Path, tmp_path_factory: pytest.TempPathFactory, rel: Path, message: str
) -> None:
    _from_binary(workspace3, rel, tmp_path_factory)
    with pytest.raises(PipelineError, match=message):
        reports.load_plot_inputs(workspace3)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["yes", "no", "maybe"], "not in column order"),
        (["yes", "maybe"], "must be \\[yes, no\\] or \\[yes, no, maybe\\]"),
        ("maybe", "must be"),
    ],
)
def test_eval_json_labels_must_be_a_task_in_column_order(workspace3: Path, labels, message: str) -> None:
    path = workspace3 / paths.EVAL_METRICS
    data = json.loads(path.read_text())
    data["labels"] = labels
    path.write_text(json.dumps(data))
    with pytest.raises(PipelineError, match=rf"metrics/eval.json: 'labels' .*{message}.*dvc repro evaluate"):
        reports.load_plot_inputs(workspace3)


def test_a_confusion_matrix_of_the_other_task_is_refused(workspace3: Path) -> None:
    path = workspace3 / paths.EVAL_METRICS
    data = json.loads(path.read_text())
    data["test"]["lora"]["confusion"] = {g: {p: 1 for p in ("no", "yes")} for g in ("no", "yes")}
    path.write_text(json.dumps(data))
    with pytest.raises(
        PipelineError, match=r"test.lora.confusion is not a matrix over the labels \['yes', 'no', 'maybe'\]"
    ):
        reports.load_plot_inputs(workspace3)


def test_three_label_summary_has_per_class_rows_for_every_method(inputs3) -> None:
    text = reports.summary_markdown(inputs3, 10, FIGURES)
    header = next(line for line in text.splitlines() if line.startswith("| Method | yes precision"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    expected = [f"{label} {what}" for label in ("yes", "no", "maybe") for what in ("precision", "recall", "predicted")]
    assert columns == ["Method", *expected]
    for method in METHODS:
        m = inputs3.test[method]
        rows = _table_rows(text, f"`{method}`")
        per_class = next(r for r in rows if len(r) == len(columns))
        cells = dict(zip(columns, per_class, strict=True))
        for label in ("yes", "no", "maybe"):
            assert cells[f"{label} precision"] == f"{m['precision'][label]:.3f}", (method, label)
            assert cells[f"{label} recall"] == f"{m['recall'][label]:.3f}", (method, label)
            predicted = sum(row[label] for row in m["confusion"].values())
            assert cells[f"{label} predicted"] == str(predicted), (method, label)
    # The gold counts and what the K-label numbers mean, once.
    gold = pd.Series([r["label"] for r in inputs3.test_rows.values()]).value_counts()
    assert f"yes {gold['yes']}, no {gold['no']}, maybe {gold['maybe']}" in text
    assert "Macro-F1 is the mean F1 of the 3 classes" in text and "ROC AUC (one-vs-rest macro)" in text


def test_binary_summary_keeps_its_binary_layout(inputs) -> None:
    text = reports.summary_markdown(inputs, 10, FIGURES)
    assert "Per-class" not in text and "Task:" not in text and "one-vs-rest" not in text


def test_three_label_stage_writes_reports_with_maybe_answers(workspace3: Path, monkeypatch) -> None:
    monkeypatch.setattr(reports, "render_figures", lambda *args, **kwargs: [])
    reports.run_plot_stage(Params(), workspace3)
    examples = (workspace3 / paths.EXAMPLES_REPORT).read_text()
    assert "gold **maybe**" in examples and "predicted **maybe**" in examples
    assert "## Per-class precision and recall (test)" in (workspace3 / paths.SUMMARY_REPORT).read_text()


def test_the_plot_stage_reads_what_evaluate_writes_for_three_labels(workspace3: Path) -> None:
    """Evaluate's own writers (eval.json, CSVs rounded to 6 decimals) in, three-label figures and report out."""
    # Here, not at the top: comparison imports torch, which the other tests here do without.
    from pubmedqa_peft import comparison

    params = Params.model_validate({"task": {"labels": ["yes", "no", "maybe"]}})
    test = read_jsonl(workspace3 / paths.split_file("test"))
    rng = np.random.default_rng(1)
    results = {
        method: comparison.MethodResult(
            {"val": rng.dirichlet([1, 1, 1], size=40), "test": rng.dirichlet([1, 1, 1], size=len(test))},
            {"median": 0.01, "p90": 0.02},
            100.0,
            0,
            1000,
        )
        for method in METHODS
    }
    data = comparison.summarize(params, {"val": test[:40], "test": test}, results)
    (workspace3 / paths.EVAL_METRICS).write_text(json.dumps(data))
    shutil.rmtree(workspace3 / paths.predictions_file("base").parent.parent)
    comparison.write_plot_data(workspace3 / paths.predictions_file("base").parent.parent, params, test, results)
    inputs = reports.load_plot_inputs(workspace3)
    assert inputs.task == THREE_LABELS
    fig = plotting.plot_reliability(inputs.predictions, 10, labels=inputs.task.labels)
    for ax in fig.axes[: len(METHODS)]:
        method = ax.get_gid().removeprefix("panel:")
        assert f"ECE = {data['test'][method]['ece']:.3f}" in ax.get_title()
    assert "| Method | yes precision" in reports.summary_markdown(inputs, 10, FIGURES)


# --- several training seeds ----------------------------------------------------------------------


def test_seeds_give_per_seed_metrics_mean_and_std_in_eval_json_the_report_and_the_figure(workspace: Path) -> None:
    """Evaluate's summarize with three seeds' probabilities, then the plot stage's report and bar figure."""
    from pubmedqa_peft import comparison

    params = Params.model_validate({"train": {"seeds": [1, 2, 3]}})
    test = read_jsonl(workspace / paths.split_file("test"))
    y = np.array([r["label"] == "yes" for r in test], dtype=float)
    rng = np.random.default_rng(5)

    def probs(noise: float) -> dict[str, np.ndarray]:
        return {
            s: np.clip(
                y[: len(y) if s == "test" else 40] + rng.normal(0, noise, size=len(y) if s == "test" else 40), 0, 1
            )
            for s in ("val", "test")
        }

    results = {
        m: comparison.MethodResult(probs(0.5), {"median": 0.01, "p90": 0.02}, 100.0, 0, 1000) for m in ("base", "lora")
    }
    results["lora"].extra["seed_probs"] = {2: probs(0.6), 3: probs(0.7)}
    data = comparison.summarize(params, {"val": test[:40], "test": test}, results)
    lora = data["test"]["lora"]
    assert "seeds" not in data["test"]["base"]
    assert list(lora["seeds"]) == ["1", "2", "3"] and lora["seeds"]["1"]["accuracy"] == lora["accuracy"]
    accs = [lora["seeds"][s]["accuracy"] for s in ("1", "2", "3")]
    assert lora["accuracy_mean"] == pytest.approx(np.mean(accs)) and lora["accuracy_std"] == pytest.approx(
        np.std(accs, ddof=1)
    )
    assert lora["accuracy_std"] > 0 and lora["macro_f1_std"] > 0

    eval_doc = json.loads((workspace / paths.EVAL_METRICS).read_text())
    eval_doc["test"]["lora"].update(
        {k: lora[k] for k in ("seeds", "accuracy_mean", "accuracy_std", "macro_f1_mean", "macro_f1_std")}
    )
    (workspace / paths.EVAL_METRICS).write_text(json.dumps(eval_doc))
    inputs = reports.load_plot_inputs(workspace)
    summary = reports.summary_markdown(inputs, 10, FIGURES)
    assert "## Across 3 training seeds" in summary
    assert f"{lora['accuracy_mean']:.3f} ± {lora['accuracy_std']:.3f}" in summary
    fig = plotting.plot_metric_bars(inputs.test, ["base", "lora"], "t")
    dots = [line for line in fig.axes[0].lines if line.get_gid() == "seeds:lora"]
    assert sorted(float(v) for line in dots for v in line.get_ydata()) == sorted(
        [*accs, *(lora["seeds"][s]["macro_f1"] for s in ("1", "2", "3"))]
    )
    assert "dot = one training seed" in fig.axes[0].get_title()
