"""End to end with real ``dvc`` on decoder-only models: a tiny Llama pipeline, then GPT-2 as an experiment."""

from __future__ import annotations

import json

import pytest
from e2e_support import E2E_PARAMS, commit_all, dvc, make_repo, read_json, status

from pubmedqa_peft.methods import registry

pytestmark = pytest.mark.e2e

METHODS = registry.names()
EVALUATED = {"base", *METHODS, "majority", "tfidf_logreg", "fewshot_k3"}
FIGURES = ("accuracy_macro_f1", "all_methods", "footprint", "cost_benefit", "loss_curves", "confusion")
# Leaner than the T5 run (two whole pipelines here): one epoch of 32 examples; the tiny
# Llama-2 tokenizer spends more tokens than T5's, so three exemplars fill the 256 tokens.
LEAN = {**E2E_PARAMS, "train.epochs": 1, "train.max_train_examples": 32, "evaluate.fewshot_k": [3]}


def _assert_complete_run(repo, model_type: str) -> dict:
    for m in METHODS:
        manifest = read_json(repo / "models" / m / "run.json")
        assert (manifest["family"], manifest["model_type"], manifest["method"]) == ("causal", model_type, m)
        train = read_json(repo / "metrics" / "train" / f"{m}.json")
        assert train["trainable_params"] > 0 and train["tokens_seen"] > 0, m
        assert (repo / "plots" / "train" / m / "metrics" / "train" / "loss.tsv").is_file(), m
    doc = read_json(repo / "metrics" / "eval.json")
    assert set(doc["test"]) == EVALUATED == set(doc["val"])
    for m, metrics in doc["test"].items():
        assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1, m
        assert {"roc_auc", "ece", "confusion", "tau_target", "latency_s"} <= set(metrics), m
    for png in FIGURES:
        assert (repo / "plots" / "figures" / f"{png}.png").stat().st_size > 10_000, png
    assert all(m in (repo / "reports" / "summary.md").read_text() for m in EVALUATED)
    return doc


def test_a_llama_pipeline_then_gpt2_as_an_experiment_compared_by_metrics_diff(
    tmp_path, tiny_model_dir, shared_data
) -> None:
    llama, gpt2 = tiny_model_dir("tiny-llama"), tiny_model_dir("tiny-gpt2")
    repo = make_repo(
        tmp_path / "repo", {"ingest.source": str(shared_data / "ori_pqal.json"), "model.name": str(llama), **LEAN}
    )
    dvc(repo, "repro")
    llama_doc = _assert_complete_run(repo, "llama")
    assert status(repo) == {}
    commit_all(repo, "tiny llama run")

    # As a user types it: the data stages are cached, every model stage reruns on GPT-2.
    out = dvc(repo, "exp", "run", "-S", f"model.name={gpt2}", "-n", "tiny-gpt2").stdout
    assert "Running stage 'split'" not in out and "Running stage 'train_lora'" in out
    gpt2_doc = _assert_complete_run(repo, "gpt2")
    assert gpt2_doc["test"]["base"]["total_params"] != llama_doc["test"]["base"]["total_params"]

    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    base = diff["metrics/eval.json"]["test.base.total_params"]
    assert (base["old"], base["new"]) == (
        llama_doc["test"]["base"]["total_params"],
        gpt2_doc["test"]["base"]["total_params"],
    )
    assert "metrics/train/lora.json" in diff
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    assert "tiny-gpt2" in json.dumps(shown)
