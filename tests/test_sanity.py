"""The sanity data set generator: balanced planted labels, a cue that alone decides the label."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pubmedqa_peft.data import RawRecord, clean_records, read_json_object
from pubmedqa_peft.sanity import CUES, SanityError, plant_labels, write_planted
from pubmedqa_peft.splits import stratified_split

LABEL_SETS = [("yes", "no"), ("yes", "no", "maybe")]


@pytest.fixture(scope="module")
def real_records(shared_data: Path) -> dict:
    """The real PQA-L object (read, never copied)."""
    return read_json_object(shared_data / "ori_pqal.json")[0]


def _cues_in(record: dict) -> list[str]:
    text = " ".join(record["CONTEXTS"])
    return [label for label, cue in CUES.items() if cue in text]


@pytest.mark.parametrize("labels", LABEL_SETS)
def test_labels_are_balanced_and_in_pqal_shape(real_records, labels):
    planted = plant_labels(real_records, labels, seed=0)
    assert list(planted) == list(real_records)  # every PQA-L record has a question and a context
    counts = Counter(r["final_decision"] for r in planted.values())
    assert set(counts) == set(labels) and max(counts.values()) - min(counts.values()) <= 1
    for pmid, record in planted.items():
        assert set(real_records[pmid]) <= set(record)
        assert record["QUESTION"] == real_records[pmid]["QUESTION"]
        assert isinstance(record["CONTEXTS"], list) and all(isinstance(c, str) and c for c in record["CONTEXTS"])
        assert len(record["LABELS"]) == len(record["CONTEXTS"])


@pytest.mark.parametrize("labels", LABEL_SETS)
def test_the_cue_alone_decides_the_label(real_records, labels):
    planted = plant_labels(real_records, labels, seed=1)
    for record in planted.values():
        # Exactly one cue per record, and it is the planted label's.
        assert _cues_in(record) == [record["final_decision"]]
    # The planted label owes nothing to the real one: agreement near chance (1/K, with
    # 1000 records its standard deviation is about 0.015).
    agree = sum(r["final_decision"] == real_records[p]["final_decision"] for p, r in planted.items())
    assert abs(agree / len(planted) - 1 / len(labels)) < 0.08


def test_the_cue_moves_across_the_context_and_the_context_is_cut(real_records):
    planted = plant_labels(real_records, ("yes", "no"), seed=0, max_context_words=15)
    slots = [r["SANITY_CUE"] for r in planted.values()]
    first = sum(s["slot"] == 0 for s in slots)
    last = sum(s["slot"] == s["slots"] - 1 for s in slots)
    middle = len(slots) - first - last
    assert min(first, last, middle) > 50
    for record in planted.values():
        words = len(" ".join(record["CONTEXTS"]).split()) - len(CUES[record["final_decision"]].split())
        assert 0 < words <= 15
    whole = plant_labels(real_records, ("yes", "no"), seed=0, max_context_words=None)
    assert max(len(" ".join(r["CONTEXTS"]).split()) for r in whole.values()) > 300


def test_deterministic_per_seed(real_records):
    a = plant_labels(real_records, ("yes", "no"), seed=3)
    assert a == plant_labels(real_records, ("yes", "no"), seed=3)
    b = plant_labels(real_records, ("yes", "no"), seed=4)
    assert [r["final_decision"] for r in a.values()] != [r["final_decision"] for r in b.values()]


@pytest.mark.parametrize("labels", LABEL_SETS)
def test_cleaning_keeps_every_record_and_splits_stratify(real_records, labels):
    planted = plant_labels(real_records, labels, seed=0, n_records=300)
    assert len(planted) == 300 and list(planted) == [p for p in real_records if p in planted]
    result = clean_records([RawRecord(p, r, False) for p, r in planted.items()], labels)
    assert len(result.records) == 300 and sum(result.dropped.values()) == 0
    test = stratified_split(result.records, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=42)["test"]
    assert sorted(Counter(r["label"] for r in test).values()) == [30 // len(labels)] * len(labels)


@pytest.mark.parametrize(
    ("labels", "n_records", "message"),
    [
        (("yes",), None, "must be"),
        (("yes", "yes", "no"), None, "each label once"),
        (("yes", "maybe"), None, "must be"),
        (("yes", "perhaps"), None, "must be"),
        (("yes", "no"), 0, "positive integer"),
        (("yes", "no"), 2000, "only 1000 records"),
    ],
)
def test_bad_arguments_are_refused(real_records, labels, n_records, message):
    with pytest.raises(SanityError, match=message):
        plant_labels(real_records, labels, n_records=n_records)


def test_write_planted_returns_the_files_sha256_and_never_overwrites_the_source(shared_data, tmp_path):
    out = tmp_path / "planted.json"
    sha = write_planted(shared_data / "ori_pqal.json", out, ("yes", "no"), seed=0, n_records=50)
    assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
    assert len(json.loads(out.read_text())) == 50
    with pytest.raises(SanityError, match="refusing to overwrite"):
        write_planted(out, out)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pubmedqa_peft.sanity", *args], capture_output=True, text=True)


def test_cli_prints_the_sha256_for_ingest(shared_data, tmp_path):
    out = tmp_path / "sub" / "planted.json"
    proc = _cli(str(out), "--source", str(shared_data / "ori_pqal.json"), "--labels", "yes", "no", "maybe")
    assert proc.returncode == 0, proc.stderr
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"ingest.sha256={sha}" in proc.stdout and f"ingest.source={out.resolve()}" in proc.stdout
    assert {r["final_decision"] for r in json.loads(out.read_text()).values()} == {"yes", "no", "maybe"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--labels", "yes", "sure"], "must be [yes, no]"), (["--source", "/nonexistent/ori_pqal.json"], "not found")],
)
def test_cli_errors_are_one_line(shared_data, tmp_path, extra, message):
    out = tmp_path / "planted.json"
    proc = _cli(str(out), "--source", str(shared_data / "ori_pqal.json"), *extra)
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr
