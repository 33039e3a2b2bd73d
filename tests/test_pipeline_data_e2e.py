"""End to end with real ``dvc``: the data stages on the real PQA-L file, both split strategies."""

from __future__ import annotations

import pytest
from e2e_support import dvc, make_repo, read_json, set_params, status

from pubmedqa_peft.files import read_jsonl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory, shared_data):
    return make_repo(
        tmp_path_factory.mktemp("data_e2e"),
        {"ingest.source": str(shared_data / "ori_pqal.json")},
    )


def _splits(repo):
    return {s: read_jsonl(repo / "data" / "splits" / f"{s}.jsonl") for s in ("train", "val", "test")}


def test_repro_split_gives_the_published_counts(repo):
    dvc(repo, "repro", "split")
    clean = read_json(repo / "metrics/data/clean.json")
    assert clean["records_in"] == 1000
    assert clean["records_out"] == 890
    assert clean["labels"] == {"yes": 552, "no": 338}
    assert clean["dropped"]["maybe"] == 110

    splits = _splits(repo)
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(ids) == 890 == len(set(ids))
    counts = read_json(repo / "metrics/data/split.json")["counts"]
    assert {s: counts[s]["total"] for s in splits} == {s: len(rows) for s, rows in splits.items()}
    whole_yes = 552 / 890
    for rows in splits.values():
        n_yes = sum(r["label"] == "yes" for r in rows)
        assert abs(n_yes - whole_yes * len(rows)) <= 1


def test_second_repro_does_nothing(repo):
    out = dvc(repo, "repro", "split").stdout
    assert "Running stage" not in out
    assert status(repo) == {} or all(not k.startswith(("ingest", "clean", "split")) for k in status(repo))


def test_training_param_change_does_not_touch_data_stages(repo):
    set_params(repo, {"train.epochs": 1, "train_prompt.lr": 0.5, "evaluate.tau": 0.8})
    changed = status(repo)
    assert not {"ingest", "clean", "split"} & set(changed)
    out = dvc(repo, "repro", "split").stdout
    # Only the check of params.yaml reruns: its output stays the same, so ingest does not.
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}
    assert ran == {"check_params"}
    assert "Stage 'ingest' didn't change, skipping" in out


def test_official_strategy_reruns_only_split(repo, shared_data):
    set_params(
        repo,
        {"split.strategy": "official", "split.official_test_ids": str(shared_data / "test_ground_truth.json")},
    )
    out = dvc(repo, "repro", "split").stdout
    assert "Running stage 'split'" in out
    assert "Running stage 'ingest'" not in out and "Running stage 'clean'" not in out
    splits = _splits(repo)
    assert len(splits["test"]) == 445
    assert sum(len(v) for v in splits.values()) == 890
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids))
    assert "Running stage" not in dvc(repo, "repro", "split").stdout


def test_the_official_three_label_setting_tests_on_the_500_official_questions(repo, shared_data):
    set_params(
        repo,
        {
            "task.labels": ["yes", "no", "maybe"],
            "split.strategy": "official",
            "split.official_test_ids": str(shared_data / "test_ground_truth.json"),
        },
    )
    out = dvc(repo, "repro", "split").stdout
    # task.labels changes what clean keeps, so clean and split rerun; ingest does not.
    assert "Running stage 'clean'" in out and "Running stage 'ingest'" not in out
    clean = read_json(repo / "metrics/data/clean.json")
    assert clean["records_out"] == 1000 and clean["dropped"]["maybe"] == 0
    assert clean["labels"] == {"yes": 552, "no": 338, "maybe": 110}
    counts = read_json(repo / "metrics/data/split.json")["counts"]
    assert counts["test"] == {"total": 500, "yes": 276, "no": 169, "maybe": 55}
    assert sum(counts[s]["total"] for s in ("train", "val", "test")) == 1000
    # The 500 remaining records are stratified into train and val over the three labels.
    rest = {label: counts["train"][label] + counts["val"][label] for label in ("yes", "no", "maybe")}
    assert rest == {"yes": 552 - 276, "no": 338 - 169, "maybe": 110 - 55}
