"""End to end with real ``dvc``: several training seeds as a user asks for them (``-S 'train.seeds=[1,2,3]'``)."""

from __future__ import annotations

import pytest
from e2e_support import dvc, read_json

from pubmedqa_peft.methods import registry

pytestmark = pytest.mark.e2e


def test_three_seeds_train_every_method_three_times_and_report_mean_and_std(clone) -> None:
    # Smaller than the shared run: 15 trainings instead of 5.
    dvc(clone, "exp", "run", "-S", "train.seeds=[1,2,3]", "-S", "train.max_train_examples=16", "-S", "train.epochs=1")
    doc = read_json(clone / "metrics" / "eval.json")
    summary = (clone / "reports" / "summary.md").read_text()
    assert "## Across 3 training seeds" in summary
    for m in registry.names():
        for seed in (2, 3):
            assert read_json(clone / "models" / m / "seeds" / str(seed) / "run.json")["method"] == m
            assert (clone / "plots" / "train" / m / "seeds" / str(seed) / "metrics" / "train" / "loss.tsv").is_file()
        assert set(read_json(clone / "metrics" / "train" / f"{m}.json")["seeds"]) == {"1", "2", "3"}
        test = doc["test"][m]
        assert list(test["seeds"]) == ["1", "2", "3"]
        assert test["seeds"]["1"]["accuracy"] == test["accuracy"]
        accs = [s["accuracy"] for s in test["seeds"].values()]
        assert min(accs) <= test["accuracy_mean"] <= max(accs) and test["accuracy_std"] >= 0
        assert f"`{m}` | {test['accuracy_mean']:.3f} ± {test['accuracy_std']:.3f}" in summary
    # Baselines have no seeds.
    assert "seeds" not in doc["test"]["base"] and "seeds" not in doc["test"]["majority"]
