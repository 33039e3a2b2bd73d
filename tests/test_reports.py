"""Tests of the plot stage's input checks and of the Markdown reports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fake_outputs import MODEL, SEED, TRAIN_EXAMPLES, VAL_EXAMPLES, fake_methods, write_fake_workspace

from pubmedqa_peft import paths, reports
from pubmedqa_peft.config import Params
from pubmedqa_peft.plotting import FigureContext
from pubmedqa_peft.stage import PipelineError

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
