"""The PQA-A-sized generator, and the data stages' functions on what it writes (small sizes: fast)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pubmedqa_peft import files
from pubmedqa_peft.config import SplitConfig, TaskConfig
from pubmedqa_peft.data import clean, read_json_object
from pubmedqa_peft.large_data import FIRST_ID, PQAA_NO, PQAA_RECORDS, main, no_positions, write_pqaa
from pubmedqa_peft.splits import SPLIT_NAMES, split
from pubmedqa_peft.stage import PipelineError

PQAA_KEYS = {"QUESTION", "CONTEXTS", "LABELS", "MESHES", "YEAR", "final_decision", "LONG_ANSWER"}


@pytest.fixture
def source(shared_data: Path) -> Path:
    return shared_data / "ori_pqal.json"


def test_same_seed_same_bytes_other_seed_other_bytes(source: Path, tmp_path: Path) -> None:
    shas = [write_pqaa(tmp_path / f"{name}.json", 300, seed, source) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()
    assert shas[0] == shas[1] == hashlib.sha256((tmp_path / "a.json").read_bytes()).hexdigest() != shas[2]


def test_requested_count_of_pqaa_shaped_records_with_new_ids(source: Path, tmp_path: Path) -> None:
    write_pqaa(tmp_path / "pqaa.json", 1000, 0, source)
    records, repeated = read_json_object(tmp_path / "pqaa.json")
    real, _ = read_json_object(source)
    assert len(records) == 1000 and not repeated
    assert list(records) == [str(FIRST_ID + i) for i in range(1000)] and not set(records) & set(real)
    assert all(set(r) == PQAA_KEYS for r in records.values())  # no reasoning_* keys, as in PQA-A
    labels = [r["final_decision"] for r in records.values()]
    assert labels.count("no") == round(1000 * PQAA_NO / PQAA_RECORDS) == 72 and labels.count("yes") == 928
    real_questions = {r["QUESTION"] for r in real.values()}
    assert sum(r["QUESTION"] in real_questions for r in records.values()) < 100  # words shuffled


def test_no_share_is_pqaas_at_its_size() -> None:
    import random

    assert len(no_positions(PQAA_RECORDS, random.Random(0))) == PQAA_NO


def test_generated_file_goes_through_clean_and_split(source: Path, tmp_path: Path) -> None:
    raw = tmp_path / "pqaa.json"
    write_pqaa(raw, 1000, 3, source)
    result = clean(TaskConfig(), raw, tmp_path / "pqal.jsonl", tmp_path / "clean.json")
    assert result.records_out == 1000 and sum(result.dropped.values()) == 0  # no content repeats by chance
    assert result.labels == {"yes": 928, "no": 72}
    clean_path, metrics_path = tmp_path / "pqal.jsonl", tmp_path / "m.json"
    split(SplitConfig(), clean_path=clean_path, splits_dir=tmp_path / "s", metrics_path=metrics_path)
    counts = json.loads((tmp_path / "m.json").read_text())["counts"]
    assert [counts[s]["total"] for s in SPLIT_NAMES] == [800, 100, 100]
    assert sorted(r["id"] for s in SPLIT_NAMES for r in files.read_jsonl(tmp_path / "s" / f"{s}.jsonl")) == sorted(
        r["id"] for r in files.read_jsonl(tmp_path / "pqal.jsonl")
    )


def test_command_line_prints_the_sha256(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "deep" / "pqaa.json"
    assert main([str(out), "--records", "50", "--seed", "2", "--source", str(source)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"wrote 50 records to {out}", f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}"]


@pytest.mark.parametrize(("records", "source_text", "message"), [(0, None, "at least 1"), (5, "[]", "top level")])
def test_bad_arguments_are_one_line_errors(
    source: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    records: int,
    source_text: str | None,
    message: str,
) -> None:
    if source_text is not None:
        source = tmp_path / "src.json"
        source.write_text(source_text, encoding="utf-8")
    assert main([str(tmp_path / "x.json"), "--records", str(records), "--source", str(source)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(PipelineError, match=message):
        write_pqaa(tmp_path / "x.json", records, 0, source)
