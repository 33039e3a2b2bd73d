from __future__ import annotations

import hashlib
import json
import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from pubmedqa_peft import files
from pubmedqa_peft.config import SplitConfig, TaskConfig
from pubmedqa_peft.data import clean
from pubmedqa_peft.splits import (
    SPLIT_NAMES,
    allocate,
    check_partition,
    index_clean,
    load_clean,
    official_split,
    split,
    split_counts,
    stratified_split,
    write_splits,
)
from pubmedqa_peft.stage import PipelineError

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def make_records(n_yes: int, n_no: int, seed: int = 0) -> list[dict[str, Any]]:
    labels = ["yes"] * n_yes + ["no"] * n_no
    random.Random(seed).shuffle(labels)
    return [
        {"id": str(10_000 + i), "question": f"q{i}?", "context": f"c{i}", "label": label, "meshes": []}
        for i, label in enumerate(labels)
    ]


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


def assert_stratified(splits: dict[str, list[dict[str, Any]]], records: list[dict[str, Any]]) -> None:
    """Each split's yes count is within one example of its proportional share."""
    total = len(records)
    yes_total = sum(r["label"] == "yes" for r in records)
    for name, rows in splits.items():
        yes = sum(r["label"] == "yes" for r in rows)
        assert abs(yes - Fraction(len(rows) * yes_total, total)) <= 1, (name, yes, len(rows))


# --- allocate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (890, [0.8, 0.1, 0.1], [712, 89, 89]),
        (10, [0.8, 0.1, 0.1], [8, 1, 1]),
        (3, [0.8, 0.1, 0.1], [3, 0, 0]),
        (5, [1, 1], [3, 2]),  # a tie goes to the first weight
        (0, [0.5, 0.5], [0, 0]),
        (445, [0.8, 0.1], [396, 49]),
    ],
)
def test_allocate_examples(total: int, weights: list[float], expected: list[int]) -> None:
    assert allocate(total, weights) == expected


def test_allocate_sums_and_stays_within_one_of_the_exact_share() -> None:
    rng = random.Random(3)
    for _ in range(300):
        weights = [rng.random() for _ in range(rng.randint(1, 5))]
        total = rng.randint(0, 2000)
        counts = allocate(total, weights)
        assert sum(counts) == total
        exact = [Fraction(w).limit_denominator(10**9) for w in weights]
        for c, w in zip(counts, exact, strict=True):
            assert abs(c - total * w / sum(exact)) < 1


def test_allocate_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        allocate(5, [1, -0.1])
    with pytest.raises(ValueError, match="all-zero"):
        allocate(5, [0, 0])


# --- stratified ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_yes", "n_no"), [(552, 338), (50, 50), (7, 93), (90, 3), (11, 9)])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_stratified_sizes_and_label_shares(n_yes: int, n_no: int, seed: int) -> None:
    records = make_records(n_yes, n_no)
    splits = stratified_split(records, FRACTIONS, seed)
    assert [len(splits[s]) for s in SPLIT_NAMES] == allocate(n_yes + n_no, [0.8, 0.1, 0.1])
    assert_stratified(splits, records)
    check_partition(splits, records)


def test_stratified_is_deterministic_and_seed_dependent() -> None:
    records = make_records(60, 40)
    a = stratified_split(records, FRACTIONS, 7)
    b = stratified_split(records, FRACTIONS, 7)
    c = stratified_split(records, FRACTIONS, 8)
    assert {s: ids(a[s]) for s in SPLIT_NAMES} == {s: ids(b[s]) for s in SPLIT_NAMES}
    assert set(ids(a["test"])) != set(ids(c["test"]))


def test_stratified_does_not_depend_on_input_order() -> None:
    records = make_records(60, 40)
    reordered = list(reversed(records))
    a = stratified_split(records, FRACTIONS, 7)
    b = stratified_split(reordered, FRACTIONS, 7)
    assert {s: ids(a[s]) for s in SPLIT_NAMES} == {s: ids(b[s]) for s in SPLIT_NAMES}


def test_stratified_order_within_a_split_is_shuffled() -> None:
    # Not sorted and not grouped by label, so the first N training records are a sample.
    train = stratified_split(make_records(300, 200), FRACTIONS, 1)["train"]
    assert ids(train) != sorted(ids(train))
    first = [r["label"] for r in train[:50]]
    assert 0 < first.count("yes") < 50


def test_split_rejects_a_label_outside_yes_no_maybe() -> None:
    records = make_records(5, 5)
    records[3]["label"] = "perhaps"
    with pytest.raises(PipelineError, match="label 'perhaps'"):
        stratified_split(records, FRACTIONS, 0)


def test_three_labels_are_each_stratified_within_one_of_their_share() -> None:
    # PQA-L's own counts: 552 yes, 338 no, 110 maybe.
    records = make_records(552, 338)
    records += [{**r, "id": f"m{i:04d}", "label": "maybe"} for i, r in enumerate(make_records(110, 0))]
    splits = stratified_split(records, FRACTIONS, 3)
    counts = split_counts(splits)
    for label, total in (("yes", 552), ("no", 338), ("maybe", 110)):
        assert sum(counts[s][label] for s in SPLIT_NAMES) == total
        for s in SPLIT_NAMES:
            assert abs(counts[s][label] - total * FRACTIONS[s]) < 1, (s, label, counts)
    assert [counts[s]["total"] for s in SPLIT_NAMES] == [800, 100, 100]
    # The binary task's counts have no maybe key at all.
    assert "maybe" not in split_counts(stratified_split(make_records(10, 10), FRACTIONS, 0))["train"]


# --- official --------------------------------------------------------------------------------


def test_official_split_uses_the_given_test_ids() -> None:
    records = make_records(80, 60)
    test_ids = [*ids(records[:30]), "99999991", "99999992"]  # two not in the data
    splits = official_split(records, test_ids, FRACTIONS, 5)
    assert set(ids(splits["test"])) == set(ids(records[:30]))
    rest = records[30:]
    assert [len(splits["train"]), len(splits["val"])] == allocate(len(rest), [0.8, 0.1])
    assert_stratified({"train": splits["train"], "val": splits["val"]}, rest)
    check_partition(splits, records)


def test_official_needs_train_or_val_share() -> None:
    with pytest.raises(PipelineError, match="train \\+ val must be > 0"):
        official_split(make_records(5, 5), ["10000"], {"train": 0, "val": 0, "test": 1}, 0)


# --- runtime partition check -------------------------------------------------------------


def test_check_partition_raises_on_overlap() -> None:
    records = make_records(6, 4)
    splits = {"train": records[:6], "val": records[5:8], "test": records[8:]}
    with pytest.raises(PipelineError, match=f"record '{records[5]['id']}' is in both train and val"):
        check_partition(splits, records)


def test_check_partition_raises_on_the_same_content_in_two_splits() -> None:
    records = make_records(6, 4)
    original = records[2]
    copy = original | {"id": "99999", "question": original["question"].upper(), "context": f" {original['context']}\n"}
    splits = {"train": records[:6], "val": records[6:8], "test": [*records[8:], copy]}
    with pytest.raises(PipelineError) as err:
        check_partition(splits, [*records, copy])
    assert str(err.value) == (
        f"split: records '{original['id']}' (train) and '99999' (test) have the same question and context; "
        "splits must not overlap"
    )


def test_check_partition_lets_through_what_is_no_leak() -> None:
    # The same content twice within one split, and records with no text at all.
    records = make_records(6, 4)
    copy = records[0] | {"id": "99999"}
    bare = [{"id": f"bare{i}", "label": "yes"} for i in range(3)]
    splits = {"train": [*records[:6], copy, bare[0]], "val": [*records[6:8], bare[1]], "test": [*records[8:], bare[2]]}
    check_partition(splits, [*records, copy, *bare])


def test_split_stage_refuses_a_clean_table_with_copied_content(tmp_path: Path) -> None:
    # Every record twice under two ids: some pair is bound to straddle two splits.
    originals = make_records(10, 10)
    copies = [r | {"id": f"9{r['id']}"} for r in originals]
    clean_path = write_clean(tmp_path, originals + copies)
    out, metrics = tmp_path / "splits", tmp_path / "split.json"
    with pytest.raises(PipelineError, match=r"^split: records '9?\d+' \(\w+\) and '9?\d+' \(\w+\) have the same"):
        split(SplitConfig(), clean_path=clean_path, splits_dir=out, metrics_path=metrics)
    assert not out.exists() and not metrics.exists()


def test_check_partition_raises_on_a_lost_record() -> None:
    records = make_records(6, 4)
    splits = {"train": records[:6], "val": records[6:8], "test": records[8:9]}
    with pytest.raises(PipelineError, match="1 record\\(s\\) are in no split"):
        check_partition(splits, records)


def test_split_stage_runs_the_overlap_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A buggy splitter that puts one record in two splits must be caught before writing.
    from pubmedqa_peft import splits as splits_module

    def leaky(records: list[dict[str, Any]], fractions: Any, seed: int) -> dict[str, list[dict[str, Any]]]:
        return {"train": records, "val": records[:1], "test": records[1:2]}

    monkeypatch.setattr(splits_module, "stratified_split", leaky)
    clean_path = tmp_path / "pqal.jsonl"
    files.write_jsonl(clean_path, make_records(10, 10))
    out, metrics = tmp_path / "splits", tmp_path / "split.json"
    with pytest.raises(PipelineError, match="is in both"):
        split(SplitConfig(), clean_path=clean_path, splits_dir=out, metrics_path=metrics)
    assert not out.exists() and not metrics.exists()


# --- the stage's work on files ----------------------------------------------------------------


def write_clean(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "data" / "clean" / "pqal.jsonl"
    files.write_jsonl(path, records)
    return path


def test_split_writes_three_files_and_metrics(tmp_path: Path) -> None:
    records = make_records(30, 20)
    clean_path = write_clean(tmp_path, records)
    out = tmp_path / "data" / "splits"
    out.mkdir(parents=True)
    (out / "stale.jsonl").write_text("old\n")  # the directory is replaced as a whole
    metrics_path = tmp_path / "split.json"
    result = split(SplitConfig(seed=3), clean_path=clean_path, splits_dir=out, metrics_path=metrics_path)
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["clean", "splits"]
    by_id = {r["id"]: r for r in records}
    for name in SPLIT_NAMES:
        # split() returns small index entries; the files hold the whole records, in the same order.
        assert files.read_jsonl(out / f"{name}.jsonl") == [by_id[e["id"]] for e in result[name]]
        assert [e["label"] for e in result[name]] == [by_id[e["id"]]["label"] for e in result[name]]
    metrics = json.loads(metrics_path.read_text())
    assert metrics["strategy"] == "stratified" and metrics["total"] == 50
    assert "official_ids_missing" not in metrics
    for name in SPLIT_NAMES:
        counts = metrics["counts"][name]
        assert counts["total"] == len(result[name]) == counts["yes"] + counts["no"]
    assert sum(metrics["counts"][s]["total"] for s in SPLIT_NAMES) == 50
    assert metrics["provenance"]["config"]["split"]["seed"] == 3


def test_split_output_is_identical_across_runs(tmp_path: Path) -> None:
    clean_path = write_clean(tmp_path, make_records(40, 25))
    contents = []
    for run in ("a", "b"):
        out = tmp_path / run
        split(SplitConfig(), clean_path=clean_path, splits_dir=out, metrics_path=tmp_path / f"{run}.json")
        contents.append([(out / f"{s}.jsonl").read_bytes() for s in SPLIT_NAMES])
    assert contents[0] == contents[1]


def test_split_refuses_an_empty_split(tmp_path: Path) -> None:
    clean_path = write_clean(tmp_path, make_records(2, 1))
    out, metrics = tmp_path / "splits", tmp_path / "split.json"
    with pytest.raises(PipelineError, match="val, test would be empty"):
        split(SplitConfig(), clean_path=clean_path, splits_dir=out, metrics_path=metrics)
    assert not out.exists() and not metrics.exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "1", "label": "perhaps"}', "label 'perhaps' is not yes, no or maybe"),
        ('{"label": "yes"}', "record 2: missing or non-string id"),
        ('{"id": "1", "label": "no"}', "record '1' appears more than once"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_load_clean_rejects_bad_rows(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "pqal.jsonl"
    path.write_text('{"id": "1", "label": "yes"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(PipelineError, match=message):
        load_clean(path)


def test_load_clean_missing_file_says_run_clean(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="run the clean stage first"):
        load_clean(tmp_path / "nope.jsonl")


def write_official(tmp_path: Path, mapping: dict[str, str]) -> tuple[Path, str]:
    path = tmp_path / "official" / "test_ground_truth.json"
    path.parent.mkdir()
    path.write_text(json.dumps(mapping), encoding="utf-8")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_official_strategy_with_a_generated_id_file(tmp_path: Path) -> None:
    records = make_records(50, 40)
    clean_path = write_clean(tmp_path, records)
    official = {r["id"]: r["label"] for r in records[:20]} | {"88888881": "maybe", "88888882": "maybe"}
    id_file, sha = write_official(tmp_path, official)
    cfg = SplitConfig(strategy="official", official_test_ids=str(id_file), official_test_ids_sha256=sha)
    out, metrics_path = tmp_path / "data" / "splits", tmp_path / "split.json"
    result = split(cfg, clean_path=clean_path, splits_dir=out, metrics_path=metrics_path)
    assert set(ids(result["test"])) == set(ids(records[:20]))
    metrics = json.loads(metrics_path.read_text())
    assert metrics["strategy"] == "official"
    assert metrics["official_ids_missing"] == 2
    assert metrics["official_ids_missing_by_label"] == {"maybe": 2}
    assert metrics["counts"]["test"]["total"] == 20
    # The fetched id file is not kept anywhere in the project.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "official", "split.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["clean", "splits"]


def test_official_strategy_refuses_a_wrong_hash_and_writes_nothing(tmp_path: Path) -> None:
    clean_path = write_clean(tmp_path, make_records(20, 20))
    id_file, _sha = write_official(tmp_path, {"10000": "yes"})
    cfg = SplitConfig(strategy="official", official_test_ids=str(id_file), official_test_ids_sha256="a" * 64)
    out, metrics_path = tmp_path / "splits", tmp_path / "split.json"
    with pytest.raises(PipelineError, match=r"split\.official_test_ids_sha256"):
        split(cfg, clean_path=clean_path, splits_dir=out, metrics_path=metrics_path)
    assert not out.exists() and not metrics_path.exists()


def test_official_strategy_unreachable_url_says_how_to_fix(tmp_path: Path) -> None:
    clean_path = write_clean(tmp_path, make_records(20, 20))
    cfg = SplitConfig(strategy="official", official_test_ids="http://127.0.0.1:9/test_ground_truth.json")
    with pytest.raises(PipelineError) as err:
        split(cfg, 5, clean_path=clean_path, splits_dir=tmp_path / "s", metrics_path=tmp_path / "m.json")
    assert "dvc exp run -S 'split.official_test_ids=../shared/data/pubmedqa/test_ground_truth.json'" in str(err.value)


def test_official_ids_url_token_is_in_no_message_or_metrics(tmp_path: Path) -> None:
    clean_path = write_clean(tmp_path, make_records(20, 20))
    id_file, sha = write_official(tmp_path, {"10000": "yes"})
    url = f"{id_file.as_uri()}?token=abc123"  # a file: URL ignores its query: the same file
    cfg = SplitConfig(strategy="official", official_test_ids=url, official_test_ids_sha256=sha)
    split(cfg, clean_path=clean_path, splits_dir=tmp_path / "s", metrics_path=tmp_path / "m.json")
    metrics = (tmp_path / "m.json").read_text()
    assert "abc123" not in metrics
    assert json.loads(metrics)["provenance"]["config"]["split"]["official_test_ids"] == f"{id_file.as_uri()}?token=***"

    id_file.write_text("{}", encoding="utf-8")
    empty = cfg.model_copy(update={"official_test_ids_sha256": hashlib.sha256(b"{}").hexdigest()})
    with pytest.raises(PipelineError) as err:
        split(empty, clean_path=clean_path, splits_dir=tmp_path / "s2", metrics_path=tmp_path / "m2.json")
    assert str(err.value) == f"split.official_test_ids: {id_file.as_uri()}?token=*** holds no PMID"


# --- real data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_clean(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    out = root / "pqal.jsonl"
    clean(TaskConfig(), shared_data / "ori_pqal.json", out, root / "clean.json")
    return out


def test_real_data_stratified(real_clean: Path, tmp_path: Path) -> None:
    result = split(SplitConfig(), clean_path=real_clean, splits_dir=tmp_path / "s", metrics_path=tmp_path / "m.json")
    counts = json.loads((tmp_path / "m.json").read_text())["counts"]
    assert [counts[s]["total"] for s in SPLIT_NAMES] == [712, 89, 89]
    assert sum(counts[s]["yes"] for s in SPLIT_NAMES) == 552
    assert_stratified(result, load_clean(real_clean))


def test_real_data_official(real_clean: Path, shared_data: Path, tmp_path: Path) -> None:
    cfg = SplitConfig(strategy="official", official_test_ids=str(shared_data / "test_ground_truth.json"))
    result = split(cfg, clean_path=real_clean, splits_dir=tmp_path / "s", metrics_path=tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["counts"]["test"]["total"] == len(result["test"]) == 445
    assert metrics["official_ids_missing"] == 55
    assert metrics["official_ids_missing_by_label"] == {"maybe": 55}
    assert metrics["counts"]["train"]["total"] + metrics["counts"]["val"]["total"] == 445


# --- streaming: the split stage holds index entries, not records ------------------------------


@pytest.mark.parametrize("strategy", ["stratified", "official"])
def test_streamed_split_writes_what_the_held_records_gave(
    real_clean: Path, shared_data: Path, tmp_path: Path, strategy: str
) -> None:
    """The real PQA-L: splitting index entries and reading records back gives the same bytes."""
    cfg = SplitConfig(strategy=strategy, official_test_ids=str(shared_data / "test_ground_truth.json"))
    records = load_clean(real_clean)
    fractions = cfg.fractions.model_dump()
    if strategy == "official":
        test_ids = json.loads((shared_data / "test_ground_truth.json").read_text())
        held = official_split(records, list(test_ids), fractions, cfg.seed)
    else:
        held = stratified_split(records, fractions, cfg.seed)
    write_splits(held, tmp_path / "held")
    split(cfg, clean_path=real_clean, splits_dir=tmp_path / "streamed", metrics_path=tmp_path / "m.json")
    for name in SPLIT_NAMES:
        streamed, held_file = (tmp_path / d / f"{name}.jsonl" for d in ("streamed", "held"))
        assert streamed.read_bytes() == held_file.read_bytes()
    assert json.loads((tmp_path / "m.json").read_text())["counts"] == split_counts(held)


def test_index_entries_point_at_their_lines_whatever_the_line_endings(tmp_path: Path) -> None:
    rows = make_records(6, 4)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    rows[3]["question"] = "caf\u00e9 \u65e5\u672c?"  # multi-byte characters shift the byte offsets
    lines[3] = json.dumps(rows[3], ensure_ascii=False)
    endings = ["\n", "\r\n", "\r", "\n\n", "  \r\n", "\n", "\r\r\n", "\n", "\n \n", ""]
    path = tmp_path / "pqal.jsonl"
    path.write_bytes("".join(line + end for line, end in zip(lines, endings, strict=True)).encode("utf-8"))
    assert load_clean(path) == files.read_jsonl(path) == rows
    entries = index_clean(path)
    assert [(e["id"], e["label"]) for e in entries] == [(r["id"], r["label"]) for r in rows]
    write_splits({"train": entries[:5], "val": entries[5:8], "test": entries[8:]}, tmp_path / "s", clean_path=path)
    assert files.read_jsonl(tmp_path / "s" / "train.jsonl") == rows[:5]
    assert files.read_jsonl(tmp_path / "s" / "test.jsonl") == rows[8:]


def test_a_broken_line_is_reported_before_an_earlier_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "pqal.jsonl"
    path.write_text('{"id": "1", "label": "perhaps"}\n{"id": "2", "label": "yes"}\nnot json\n', encoding="utf-8")
    with pytest.raises(PipelineError, match=r"pqal\.jsonl:3: not valid JSON"):
        load_clean(path)
    with pytest.raises(PipelineError, match=r"pqal\.jsonl:3: not valid JSON"):
        index_clean(path)


def test_check_partition_finds_shared_content_through_entries(tmp_path: Path) -> None:
    records = make_records(5, 5)
    records[7] = {**records[7], "question": records[1]["question"].upper(), "context": records[1]["context"]}
    entries = index_clean(write_clean(tmp_path, records))
    splits = {"train": entries[:5], "val": entries[5:], "test": []}
    with pytest.raises(PipelineError, match=f"'{records[1]['id']}' \\(train\\) and '{records[7]['id']}' \\(val\\)"):
        check_partition(splits, entries, content=lambda e: e["content"])
