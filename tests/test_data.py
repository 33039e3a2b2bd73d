from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pubmedqa_peft import data, files
from pubmedqa_peft.config import TaskConfig
from pubmedqa_peft.data import (
    COLUMNS,
    DROP_REASONS,
    MAX_DROP_WARNINGS,
    CleanResult,
    RawRecord,
    clean,
    clean_metrics,
    clean_records,
    content_digest,
    content_key,
    iter_raw,
    log_drops,
    normalize_whitespace,
    read_json_object,
    read_raw,
)
from pubmedqa_peft.stage import PipelineError

KEEP = ("yes", "no")

_record_numbers = itertools.count(1)
_UNIQUE = object()


def record(
    question: Any = _UNIQUE,
    contexts: Any = ("First passage.", "Second passage."),
    label: Any = "yes",
    **extra: Any,
) -> dict[str, Any]:
    """A raw PQA-L record; its default question is new on every call.

    So records of a test are never content duplicates of each other by accident, only
    where the test gives the same question on purpose.
    """
    rec = {
        "QUESTION": f"Does X cause Y in case {next(_record_numbers)}?" if question is _UNIQUE else question,
        "CONTEXTS": list(contexts) if isinstance(contexts, tuple) else contexts,
        "LABELS": ["BACKGROUND", "RESULTS"],
        "MESHES": ["Humans", "Adult"],
        "YEAR": "2001",
        "reasoning_required_pred": "yes",
        "reasoning_free_pred": "yes",
        "final_decision": label,
        "LONG_ANSWER": "Yes, it does.",
    }
    rec.update(extra)
    return rec


class Outputs:
    """The clean stage's three files in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw = root / "data" / "raw" / "ori_pqal.json"
        self.out = root / "data" / "clean" / "pqal.jsonl"
        self.metrics = root / "metrics" / "data" / "clean.json"
        self.raw.parent.mkdir(parents=True)

    def write(self, content: str | bytes | dict[str, Any]) -> None:
        if isinstance(content, dict):
            content = json.dumps(content)
        if isinstance(content, str):
            content = content.encode("utf-8")
        self.raw.write_bytes(content)

    def run(self, cfg: TaskConfig | None = None) -> CleanResult:
        return clean(cfg or TaskConfig(), self.raw, self.out, self.metrics)

    def assert_nothing_written(self) -> None:
        assert not self.out.exists() and not self.metrics.exists()
        for d in (self.out.parent, self.metrics.parent):
            assert not d.exists() or list(d.iterdir()) == []


@pytest.fixture
def io(tmp_path: Path) -> Outputs:
    return Outputs(tmp_path)


def _entries(raw: dict[str, Any]) -> list[RawRecord]:
    return [RawRecord(pmid, value, False) for pmid, value in raw.items()]


def cleaned(raw: dict[str, Any]) -> CleanResult:
    return clean_records(_entries(raw), KEEP)


# --- good input ----------------------------------------------------------------------


def test_normalize_whitespace_collapses_unicode_and_newlines() -> None:
    assert normalize_whitespace("  a\n\tb\u00a0\u2009 c  ") == "a b c"
    assert normalize_whitespace(" \n ") == ""


def test_clean_builds_the_table_columns(io: Outputs) -> None:
    io.write(
        {
            "11": record(
                question="  Is  it\nso? ",
                contexts=["  One\n two. ", "", "Three."],
                label="no",
                MESHES=[" Humans ", ""],
                YEAR=1999,
            ),
            "12": record(YEAR=None, LONG_ANSWER=None),
        }
    )
    result = io.run()
    rows = files.read_jsonl(io.out)
    # The stage streams its rows to the file and keeps only their counts.
    assert result.records == [] and result.records_out == 2 and result.labels == {"yes": 1, "no": 1}
    assert [tuple(r) for r in rows] == [COLUMNS, COLUMNS]
    first, second = rows
    assert first == {
        "id": "11",
        "question": "Is it so?",
        "context": "One two. Three.",
        "label": "no",
        "long_answer": "Yes, it does.",
        "year": "1999",
        "meshes": ["Humans"],
    }
    assert second["year"] is None and second["long_answer"] == ""
    assert second["context"] == "First passage. Second passage."


def test_clean_metrics_count_everything(io: Outputs) -> None:
    raw = {
        "1": record(question="Does A cause B?", label="yes"),
        "2": record(label="no"),
        "3": record(label="maybe"),
        "4": record(label="yes"),
        "5": record(label="Yes "),
        "6": record(question=""),
        "7": record(question="DOES A CAUSE B?", label="yes"),
    }
    io.write(raw)
    io.run()
    metrics = json.loads(io.metrics.read_text())
    assert metrics["records_in"] == 7
    assert metrics["records_out"] == 3
    assert metrics["dropped"] == {
        "duplicate_id": 0,
        "invalid_label": 1,
        "empty_question": 1,
        "empty_context": 0,
        "maybe": 1,
        "duplicate_content": 1,
    }
    assert list(metrics["dropped"]) == list(DROP_REASONS)
    assert metrics["labels"] == {"yes": 2, "no": 1}
    assert metrics["records_in"] == metrics["records_out"] + sum(metrics["dropped"].values())
    assert metrics["provenance"]["config"] == {"task": {"labels": ["yes", "no"]}}
    assert {"versions", "git_revision"} <= set(metrics["provenance"])


def test_maybe_is_dropped_without_a_per_record_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pubmedqa_peft.data"):
        result = cleaned({"1": record(label="maybe"), "2": record()})
        log_drops(result)
    assert result.dropped["maybe"] == 1 and [r["id"] for r in result.records] == ["2"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == len(DROP_REASONS)
    assert any("dropped 1 record(s): maybe" in line for line in info)


def test_keep_labels_order_does_not_matter() -> None:
    raw = {"1": record(label="no"), "2": record(label="yes"), "3": record(label="maybe")}
    a = clean_records(_entries(raw), ("yes", "no"))
    b = clean_records(_entries(raw), ("no", "yes"))
    assert a.records == b.records and a.dropped == b.dropped


# --- counted drops ---------------------------------------------------------------------


@pytest.mark.parametrize("label", ["Yes ", "YES", "unknown", None, "", 1])
def test_invalid_labels_are_dropped_as_invalid_label(label: Any, caplog: pytest.LogCaptureFixture) -> None:
    result = cleaned({"7": record(label=label), "8": record()})
    assert result.dropped["invalid_label"] == 1
    assert [r["id"] for r in result.records] == ["8"]
    with caplog.at_level(logging.WARNING, logger="pubmedqa_peft.data"):
        log_drops(result)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"clean: dropped record 7: invalid_label (final_decision={label!r})"]


def test_missing_final_decision_is_invalid_label() -> None:
    rec = record()
    del rec["final_decision"]
    assert cleaned({"1": rec, "2": record()}).dropped["invalid_label"] == 1


def test_record_without_question_key_is_counted_as_empty_question() -> None:
    rec = record()
    del rec["QUESTION"]
    result = cleaned({"1": rec, "2": record(question="   "), "3": record(question=None), "4": record()})
    assert result.dropped["empty_question"] == 3
    assert [r["id"] for r in result.records] == ["4"]


@pytest.mark.parametrize("contexts", [[], ["", "  \n"], None, "missing"])
def test_empty_contexts_are_dropped_as_empty_context(contexts: Any) -> None:
    rec = record(contexts=contexts)
    if contexts == "missing":
        del rec["CONTEXTS"]
    result = cleaned({"1": rec, "2": record()})
    assert result.dropped["empty_context"] == 1
    assert [r["id"] for r in result.records] == ["2"]


def test_a_maybe_record_with_a_defect_is_counted_as_the_defect() -> None:
    result = cleaned({"1": record(label="maybe", question=""), "2": record()})
    assert result.dropped["empty_question"] == 1 and result.dropped["maybe"] == 0


def test_duplicate_pmid_in_raw_text_keeps_the_first(io: Outputs) -> None:
    first = json.dumps(record(question="First?"))
    second = json.dumps(record(question="Second?", label="no"))
    io.write(f'{{"5": {first}, "6": {json.dumps(record(question="Other?"))}, "5": {second}, "5": {second}}}')
    result = io.run()
    assert result.records_in == 4
    assert result.dropped["duplicate_id"] == 2
    assert result.dropped_records == [("5", "duplicate_id", ""), ("5", "duplicate_id", "")]
    assert [(r["id"], r["question"]) for r in files.read_jsonl(io.out)] == [("5", "First?"), ("6", "Other?")]


def test_same_content_under_another_pmid_keeps_the_first(io: Outputs) -> None:
    io.write(
        {
            "1": record(question="Does X cause Y?", contexts=["First passage.", "Second passage."]),
            "2": record(question=" does x\n CAUSE y? ", contexts=["FIRST passage.", "", "second\tpassage."]),
            "3": record(question="Does X cause Y?", contexts=["First passage. Second passage."], label="no"),
            "4": record(question="Does X cause Y", contexts=["First passage.", "Second passage."]),
            "5": record(question="Does X cause Y?", contexts=["Second passage.", "First passage."]),
        }
    )
    result = io.run()
    # 2 differs in case and whitespace only, 3 only in where the passages break: copies of 1.
    # 4 (no question mark) and 5 (passages swapped) are other content.
    assert [r["id"] for r in files.read_jsonl(io.out)] == ["1", "4", "5"]
    metrics = json.loads(io.metrics.read_text())
    assert (metrics["records_in"], metrics["records_out"], metrics["dropped"]["duplicate_content"]) == (5, 3, 2)
    assert result.dropped_records == [
        ("2", "duplicate_content", "same question and context as record 1"),
        ("3", "duplicate_content", "same question and context as record 1, which is labelled 'yes', this one 'no'"),
    ]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Is the \ufb01brosis reversible?", "Is the fibrosis reversible?", True),  # ligature
        ("Is \uff38 safe?", "Is x safe?", True),  # full-width letter
        ("Caf\u00e9?", "Cafe\u0301?", True),  # composed vs combining accent
        ("Dose in m\u00b2?", "Dose in m2?", True),  # superscript
        ("STRASSE?", "stra\u00dfe?", True),  # case folding, not just lower()
        ("Is a, b safe?", "Is a b safe?", False),  # punctuation counts
        ("Is a better than b?", "Is b better than a?", False),  # word order counts
        ("Is 10 mg enough?", "Is 1.0 mg enough?", False),  # digits count
    ],
)
def test_content_key_ignores_case_unicode_form_and_whitespace_only(a: str, b: str, same: bool) -> None:
    context = " Some  context.\n"
    assert (
        content_key({"question": a, "context": context}) == content_key({"question": b, "context": context})
    ) == same
    assert (content_key({"question": "Q?", "context": a}) == content_key({"question": "Q?", "context": b})) == same


def test_question_and_context_are_compared_apart() -> None:
    # Moving words across the question/context boundary makes different content.
    assert content_key({"question": "A b", "context": "c"}) != content_key({"question": "A", "context": "b c"})


def test_a_record_repeating_only_a_dropped_record_is_kept() -> None:
    result = cleaned(
        {
            "1": record(question="Q?", label="maybe"),
            "2": record(question="Q?", label="yes"),
            "3": record(question="", contexts=["Shared."]),
            "4": record(question="", contexts=["Shared."]),
        }
    )
    assert [r["id"] for r in result.records] == ["2"]
    assert result.dropped["maybe"] == 1 and result.dropped["empty_question"] == 2
    assert result.dropped["duplicate_content"] == 0


def test_warnings_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    n_bad = MAX_DROP_WARNINGS + 5
    raw = {str(i): record(label="bad") for i in range(n_bad)} | {"ok": record()}
    result = cleaned(raw)
    with caplog.at_level(logging.WARNING, logger="pubmedqa_peft.data"):
        log_drops(result)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == MAX_DROP_WARNINGS + 1
    assert warnings[-1] == "clean: ... and 5 more dropped record(s) not listed"


# --- errors: nothing written ---------------------------------------------------------------


def test_malformed_json_names_line_and_column(io: Outputs) -> None:
    io.write('{\n  "1": {"QUESTION": "q"\n  "2": {}\n}')
    with pytest.raises(PipelineError) as err:
        io.run()
    assert str(io.raw) in str(err.value) and "line 3, column 3" in str(err.value)
    io.assert_nothing_written()


def test_top_level_list_is_an_error(io: Outputs) -> None:
    io.write(json.dumps([record()]))
    with pytest.raises(PipelineError, match=r"top level is an array \(list\); expected a JSON object keyed by PMID"):
        io.run()
    io.assert_nothing_written()


def test_invalid_utf8_names_the_byte(io: Outputs) -> None:
    good = json.dumps({"1": record(question="Caf\u00e9?")}, ensure_ascii=False).encode("utf-8")
    bad = good.replace("\u00e9".encode(), b"\xe9")  # Latin-1 é
    io.write(bad)
    position = bad.index(b"\xe9")
    with pytest.raises(PipelineError) as err:
        io.run()
    assert f"not valid UTF-8 at byte {position} (line 1, byte 0xe9)" in str(err.value)
    assert str(io.raw) in str(err.value)
    io.assert_nothing_written()


@pytest.mark.parametrize("content", [b"", b"  \n"])
def test_empty_file_is_an_error(io: Outputs, content: bytes) -> None:
    io.write(content)
    with pytest.raises(PipelineError, match="empty"):
        io.run()
    io.assert_nothing_written()


def test_missing_raw_file_says_run_ingest(io: Outputs) -> None:
    with pytest.raises(PipelineError, match="run the ingest stage first"):
        io.run()
    io.assert_nothing_written()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("just a string", "record '42': expected an object"),
        ([1, 2], "record '42': expected an object"),
    ],
)
def test_record_that_is_not_an_object_is_an_error(io: Outputs, value: Any, message: str) -> None:
    io.write({"1": record(), "42": value})
    with pytest.raises(PipelineError, match=message):
        io.run()
    io.assert_nothing_written()


@pytest.mark.parametrize(
    ("field", "value"),
    [("QUESTION", 12), ("CONTEXTS", "a string"), ("CONTEXTS", ["ok", 3]), ("MESHES", "x"), ("YEAR", True)],
)
def test_field_of_wrong_type_is_an_error_naming_record_and_field(io: Outputs, field: str, value: Any) -> None:
    io.write({"1": record(), "9": record(**{field: value})})
    with pytest.raises(PipelineError, match=rf"record '9': {field}"):
        io.run()
    io.assert_nothing_written()


def test_key_repeated_inside_a_record_is_an_error(io: Outputs) -> None:
    io.write('{"3": {"QUESTION": "a?", "QUESTION": "b?", "CONTEXTS": ["c"], "final_decision": "yes"}}')
    with pytest.raises(PipelineError, match="record '3': key 'QUESTION' appears more than once"):
        io.run()
    io.assert_nothing_written()


def test_no_record_left_is_an_error(io: Outputs) -> None:
    io.write({"1": record(label="maybe"), "2": {"question": "lower-case keys?"}})
    with pytest.raises(PipelineError, match="no record left after cleaning"):
        io.run()
    io.assert_nothing_written()


def test_failed_clean_keeps_previous_outputs(io: Outputs) -> None:
    io.write({"1": record()})
    io.run()
    before = (io.out.read_bytes(), io.metrics.read_bytes())
    io.write("{broken")
    with pytest.raises(PipelineError):
        io.run()
    assert (io.out.read_bytes(), io.metrics.read_bytes()) == before
    assert sorted(p.name for p in io.out.parent.iterdir()) == ["pqal.jsonl"]


def test_read_raw_returns_duplicates_after_first_entries(tmp_path: Path) -> None:
    raw = tmp_path / "r.json"
    raw.write_text('{"a": {"x": 1}, "b": {}, "a": {"x": 2}}', encoding="utf-8")
    entries = read_raw(raw)
    assert [(e.pmid, e.duplicate) for e in entries] == [("a", False), ("b", False), ("a", True)]
    assert entries[0].value == {"x": 1} and entries[2].value == {"x": 2}


# --- real data -----------------------------------------------------------------------------


def test_real_data_counts(shared_data: Path, tmp_path: Path) -> None:
    out, metrics_path = tmp_path / "pqal.jsonl", tmp_path / "clean.json"
    result = clean(TaskConfig(), shared_data / "ori_pqal.json", out, metrics_path)
    metrics = json.loads(metrics_path.read_text())
    assert (metrics["records_in"], metrics["records_out"]) == (1000, 890)
    assert metrics["labels"] == {"yes": 552, "no": 338}
    assert metrics["dropped"] == dict.fromkeys(DROP_REASONS, 0) | {"maybe": 110}
    rows = files.read_jsonl(out)
    assert result.records_out == len(rows) == len({r["id"] for r in rows}) == 890
    # PQA-L holds no content duplicates: the counts above are those from before they were looked for.
    assert metrics["dropped"]["duplicate_content"] == 0 and len({content_key(r) for r in rows}) == 890
    assert all(r["question"] and r["context"] and "  " not in r["context"] for r in rows)


# --- streaming (PQA-A-sized files) ---------------------------------------------------------


def whole_file_raw(path: Path) -> list[RawRecord]:
    """The entries as the whole-file reader gives them: what the streaming reader must match."""
    obj, repeated = read_json_object(path)
    return [RawRecord(p, v, False) for p, v in obj.items()] + [RawRecord(p, v, True) for p, v in repeated]


def outcome(read: Any, path: Path) -> Any:
    try:
        return [(e.pmid, e.value, e.duplicate) for e in read(path)]
    except PipelineError as err:
        return f"error: {err}"


@pytest.fixture
def tiny_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 bytes and 5 characters of look-ahead: every record and UTF-8 sequence is cut somewhere."""
    monkeypatch.setattr(data, "READ_BYTES", 7)
    monkeypatch.setattr(data, "LOOKAHEAD_CHARS", 5)
    monkeypatch.setattr(data, "TRUNCATION_MARGIN", 4)


@pytest.mark.parametrize(
    "content",
    [
        '\ufeff{"x": {"Q": "caf\u00e9 \u65e5\u672c \U0001f600"}, "y": [1,\n 2.5e3, null, true],\r\n "x": {"Q": 2}  }\n',
        '{"a": {"b": {"c": "' + "long " * 40 + '"}}, "z": -12.75}',
        '{"QUESTION": {"k": 1, "k": 2}, "\\u00e9\\n": "\\"escaped\\" \\ud800"}',
        "{}",
        '{\n  "1": {"QUESTION": "q"\n  "2": {}\n}',
        '{"a": 1,}',
        '{"a" 1}',
        '{"a": tru}',
        '{"a": [1, 2}',
        '{"a": 1.}',
        '{"a": {}} x',
        '{"a": {}}\n\n  {',
        '{"a": "unterminated',
        '{"a": "control \x01 char"}',
        '{"a": "\\x"}',
        '{"a": "\\u12"}',
        '{"a":\n\n   }',
        '{"a": 1',
        "{",
        '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "",
        "  \n",
        "\ufeff",
        "[1, 2]",
        '"just a string"',
    ],
)
def test_streaming_reader_gives_what_the_whole_file_reader_gives(
    content: str, tmp_path: Path, tiny_buffers: None
) -> None:
    path = tmp_path / "raw.json"
    path.write_text(content, encoding="utf-8")
    expected = outcome(whole_file_raw, path)
    assert outcome(read_raw, path) == expected


def test_streaming_reader_yields_repeated_pmids_where_they_are(tmp_path: Path, tiny_buffers: None) -> None:
    path = tmp_path / "raw.json"
    path.write_text('{"x": {"n": 1}, "y": {}, "x": {"n": 2}, "z": {}}', encoding="utf-8")
    entries = [(e.pmid, e.value, e.duplicate) for e in iter_raw(path)]
    assert entries == [("x", {"n": 1}, False), ("y", {}, False), ("x", {"n": 2}, True), ("z", {}, False)]


@pytest.mark.parametrize(
    "content",
    [
        b'{"a": {"Q": "caf\xe9"}}',  # Latin-1
        b'{"a": 1,, "b": "\xff"}',  # a JSON error first, a UTF-8 error later: the UTF-8 one is reported
        b'{"a": "\xe6\x97"}',  # a cut sequence
        b'{"a": "ok"}\n\n\n \xc3',  # at the very end
    ],
)
def test_streaming_reader_names_the_bad_utf8_byte_like_the_whole_file_reader(
    content: bytes, tmp_path: Path, tiny_buffers: None
) -> None:
    path = tmp_path / "raw.json"
    path.write_bytes(content)
    expected = outcome(whole_file_raw, path)
    assert "not valid UTF-8 at byte" in expected and outcome(read_raw, path) == expected


def whole_file_clean_error(path: Path) -> str:
    try:
        clean_records(whole_file_raw(path), KEEP, str(path))
    except PipelineError as err:
        return str(err)
    raise AssertionError("no error")


@pytest.mark.parametrize(
    "content",
    [
        # a bad record, then a JSON error further on: the JSON error, as the whole-file read reports it
        '{"1": {"QUESTION": 12}, "2": {"QUESTION": "q", }',
        # a bad repeat of a PMID, then a bad record: the bad record (repeats are looked at last)
        '{"1": {"QUESTION": "q?"}, "1": {"QUESTION": 5}, "2": {"CONTEXTS": "x"}}',
        # only a bad repeat: reported, even though it comes before good records
        '{"1": {"QUESTION": "q?", "CONTEXTS": ["c"], "final_decision": "yes"}, "1": [1], "3": {}}',
        # nothing kept
        '{"1": {"QUESTION": "q?", "CONTEXTS": ["c"], "final_decision": "maybe"}, "1": {}}',
    ],
)
def test_clean_reports_the_error_the_whole_file_read_reports(content: str, io: Outputs) -> None:
    io.write(content)
    with pytest.raises(PipelineError) as err:
        io.run()
    assert str(err.value) == whole_file_clean_error(io.raw)
    io.assert_nothing_written()


def test_streaming_reader_on_real_data_in_small_chunks(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "READ_BYTES", 4093)  # a prime: chunks end everywhere, mid-character included
    monkeypatch.setattr(data, "LOOKAHEAD_CHARS", 1000)
    path = shared_data / "ori_pqal.json"
    assert outcome(read_raw, path) == outcome(whole_file_raw, path)


@pytest.mark.parametrize("labels", [["yes", "no"], ["yes", "no", "maybe"]])
def test_streamed_clean_writes_what_the_whole_file_clean_wrote(
    shared_data: Path, tmp_path: Path, labels: list[str]
) -> None:
    """The real PQA-L: the streamed stage's table and metrics are byte for byte those of the old path."""
    cfg = TaskConfig(labels=labels)
    raw = shared_data / "ori_pqal.json"
    held = clean_records(whole_file_raw(raw), labels, str(raw))
    files.write_jsonl(tmp_path / "held.jsonl", held.records)
    files.write_json(tmp_path / "held.json", clean_metrics(held, cfg))
    streamed = clean(cfg, raw, tmp_path / "out.jsonl", tmp_path / "out.json")
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "held.jsonl").read_bytes()
    assert (tmp_path / "out.json").read_bytes() == (tmp_path / "held.json").read_bytes()
    assert streamed.dropped_records == held.dropped_records


def test_pqaa_shaped_records_are_cleaned(io: Outputs) -> None:
    """PQA-A's records have no reasoning_* keys and only yes/no labels: all are kept."""
    raw = {}
    for i in range(40):
        rec = record(label="no" if i % 10 == 0 else "yes")
        del rec["reasoning_required_pred"], rec["reasoning_free_pred"]
        raw[str(900_000_000 + i)] = rec
    io.write(raw)
    result = io.run()
    assert result.records_out == 40 and result.labels == {"yes": 36, "no": 4}
    assert sum(result.dropped.values()) == 0
    assert [r["id"] for r in files.read_jsonl(io.out)] == list(raw)


def test_content_digest_is_equal_exactly_when_content_key_is() -> None:
    rows = [
        {"question": "Is it?", "context": "A b."},
        {"question": " IS  it?", "context": "a B."},
        {"question": "Is it?A", "context": " b."},
        {"question": "Is it?", "context": "A b. "},
        {"question": None, "context": ""},
        {},
    ]
    for a, b in itertools.product(rows, repeat=2):
        assert (content_digest(a) == content_digest(b)) == (content_key(a) == content_key(b)), (a, b)


def test_normalize_whitespace_is_the_regex_it_replaced() -> None:
    """``" ".join(text.split())`` is ``re.sub(r"\\s+", " ", text).strip()``: same characters, same result."""
    import random
    import re
    import sys

    regex = re.compile(r"\s+")
    every_char = "".join(map(chr, range(sys.maxunicode + 1)))
    spaces = list("".join(regex.findall(every_char)))
    assert spaces == [c for c in every_char if c.isspace()]
    rng = random.Random(0)
    alphabet = [*spaces, "a", "\u00e9", "\u200b", "."]
    for _ in range(3000):
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 12)))
        assert normalize_whitespace(text) == regex.sub(" ", text).strip(), repr(text)
