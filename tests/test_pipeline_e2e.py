"""End to end with real ``dvc`` on the tiny model: training stages, evaluate, plot."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from e2e_support import commit_all, dvc, read_json, set_params, status, would_run

from pubmedqa_peft import evaluation
from pubmedqa_peft.methods import registry

pytestmark = pytest.mark.e2e

METHODS = registry.names()
ALL_METHODS = {"base", *METHODS, "majority", "tfidf_logreg", "fewshot_k3", "fewshot_k5"}
PER_METHOD_KEYS = {
    "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "precision", "recall", "confusion", "roc_auc", "ece",
    "coverage", "selective_accuracy", "mcnemar_p_vs_base", "latency_s", "throughput_eps", "trainable_params",
    "total_params", "trainable_pct", "tau_target",
}  # fmt: skip


def test_pipeline_writes_every_output(pipeline_repo):
    for m in METHODS:
        saved = {p.name for p in (pipeline_repo / "models" / m).iterdir()}
        if m == "full":
            assert {"model.safetensors", "config.json", "run.json"} <= saved
        else:
            assert {"adapter_model.safetensors", "adapter_config.json", "run.json"} <= saved
        train = read_json(pipeline_repo / "metrics" / "train" / f"{m}.json")
        assert train["trainable_params"] > 0
        assert (train["total_params"] == train["trainable_params"]) == (m == "full")
        assert train["size_on_disk_bytes"] > 0 and train["tokens_seen"] > 0 and train["peak_memory_mb"] > 0
        assert (pipeline_repo / "plots" / "train" / m / "metrics" / "train" / "loss.tsv").is_file()
    doc = read_json(pipeline_repo / "metrics" / "eval.json")
    assert set(doc["test"]) == ALL_METHODS == set(doc["val"])
    for m, metrics in doc["test"].items():
        assert set(metrics) >= PER_METHOD_KEYS, m
    assert doc["provenance"]["versions"]["transformers"]
    for png in ("accuracy_macro_f1", "all_methods", "footprint", "cost_benefit", "loss_curves", "confusion"):
        assert (pipeline_repo / "plots" / "figures" / f"{png}.png").stat().st_size > 10_000
    summary = (pipeline_repo / "reports" / "summary.md").read_text()
    assert all(m in summary for m in ALL_METHODS)
    assert "Running stage" not in dvc(pipeline_repo, "repro").stdout
    assert status(pipeline_repo) == {}


def test_metrics_agree_with_the_predictions_files(pipeline_repo):
    doc = read_json(pipeline_repo / "metrics" / "eval.json")
    for m, metrics in doc["test"].items():
        with (pipeline_repo / "plots" / "eval" / "predictions" / f"{m}.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        y = [r["label"] for r in rows]
        p = [float(r["p_yes"]) for r in rows]
        assert len(rows) == metrics["n"]
        assert evaluation.accuracy(y, p) == pytest.approx(metrics["accuracy"], abs=1e-9)
        assert evaluation.macro_f1(y, p) == pytest.approx(metrics["macro_f1"], abs=1e-9)
        assert evaluation.confusion(y, p) == metrics["confusion"]


def test_dvc_metrics_show_lists_every_method(pipeline_repo):
    shown = json.loads(dvc(pipeline_repo, "metrics", "show", "--json").stdout)
    data = next(iter(shown.values()))["data"]["metrics/eval.json"]["data"]
    for m in ALL_METHODS:
        assert {"accuracy", "macro_f1", "accuracy_ci", "latency_s", "coverage"} <= set(data["test"][m])
        if m != "base":  # base's own p-value is null, which DVC does not list
            assert "mcnemar_p_vs_base" in data["test"][m]


def test_prefix_param_reruns_only_prefix_and_downstream(clone):
    # `dvc status` names the stages whose own params changed; their downstream stages
    # rerun only if the outputs really change (checked by the next test).
    # check_params depends on all of params.yaml, so it is in every set; its output never
    # changes, so it reruns nothing after it.
    set_params(clone, {"train_prefix.lr": 0.02})
    assert set(status(clone)) == would_run(clone) == {"check_params", "train_prefix"}
    set_params(clone, {"train_prefix.lr": 0.01, "train_prompt.num_virtual_tokens": 10})
    assert set(status(clone)) == {"check_params", "train_prompt"}
    set_params(clone, {"train_prompt.num_virtual_tokens": 20, "evaluate.tau": 0.9, "plot.dpi": 100})
    assert set(status(clone)) == {"check_params", "evaluate", "plot"}


def test_an_ia3_change_reruns_ia3_evaluate_and_plot_only(clone):
    before = read_json(clone / "metrics" / "train" / "ia3.json")
    set_params(clone, {"train_ia3.lr": 0.05})
    out = dvc(clone, "repro").stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}
    assert ran == {"check_params", "train_ia3", "evaluate", "plot"}
    after = read_json(clone / "metrics" / "train" / "ia3.json")
    assert after["trainable_params"] == before["trainable_params"]
    assert after["final_train_loss"] != before["final_train_loss"]
    assert after["provenance"]["config"]["train_ia3"]["lr"] == 0.05


def test_evaluate_reports_a_missing_adapter_clearly(clone):
    shutil.rmtree(clone / "models" / "lora")
    proc = dvc(clone, "repro", "--single-item", "evaluate", check=False)
    assert proc.returncode != 0
    assert "models/lora" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr + proc.stdout


def test_plots_show_and_diff_render(clone, tmp_path):
    out = tmp_path / "show"
    dvc(clone, "plots", "show", "-o", str(out))
    assert (out / "index.html").stat().st_size > 1000
    set_params(clone, {"plot.dpi": 90})
    dvc(clone, "repro", "plot")
    commit_all(clone, "dpi 90")
    diff = tmp_path / "diff"
    dvc(clone, "plots", "diff", "HEAD~1", "-o", str(diff))
    assert (diff / "index.html").stat().st_size > 1000


def test_an_invalid_param_fails_before_dvc_deletes_any_output(clone):
    kept = [
        clone / "models" / "lora" / "adapter_model.safetensors",
        clone / "metrics" / "train" / "lora.json",
        clone / "plots" / "train" / "lora" / "metrics" / "train" / "loss.tsv",
    ]
    before = {p: p.read_bytes() for p in kept}
    proc = dvc(clone, "exp", "run", "-S", "train_lora.r=0", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "error: stage check_params:" in output and "train_lora.r: Input should be greater than 0" in output
    assert "Traceback" not in output and "Running stage 'train_lora'" not in output
    assert {p: p.read_bytes() for p in kept} == before


def test_a_misspelt_section_stops_dvc_repro_naming_the_allowed_ones(clone):
    with (clone / "params.yaml").open("a") as fh:
        fh.write("tarin:\n  epochs: 1\n")
    proc = dvc(clone, "repro", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "tarin: unknown section; allowed sections here: model, ingest, task, split, train," in output
    assert "Traceback" not in output


def test_the_binary_default_gives_exactly_what_the_code_before_task_labels_gave(pipeline_repo):
    """Every number of eval.json and every plots/eval CSV, against a run of the pre-K-label code (a264b2c).

    Timings and provenance differ by nature and are left out. If a change is meant to move
    the numbers, regenerate the reference from the new run and say why in the commit.
    """
    import hashlib
    from pathlib import Path

    reference = read_json(Path(__file__).parent / "fixtures" / "binary_task_reference.json")
    skip = {"latency_s", "throughput_eps", "provenance"}

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in skip}
        return [strip(v) for v in x] if isinstance(x, list) else x

    assert strip(read_json(pipeline_repo / "metrics" / "eval.json")) == reference["eval"]
    root = pipeline_repo / "plots" / "eval"
    got = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.csv"))}
    assert got == reference["plots_eval_sha256"]
