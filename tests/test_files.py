from __future__ import annotations

import json
from pathlib import Path

import pytest

from pubmedqa_peft import files


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class Boom(RuntimeError):
    pass


def test_write_json_and_jsonl_round_trip(tmp_path: Path) -> None:
    rows = [{"id": "1", "text": "caf\u00e9"}, {"id": "2", "text": "x"}]
    files.write_jsonl(tmp_path / "a" / "rows.jsonl", rows)
    assert files.read_jsonl(tmp_path / "a" / "rows.jsonl") == rows
    files.write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    text = (tmp_path / "m.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"b": 1, "a": [1.5]} and text.index('"b"') < text.index('"a"')
    assert entries(tmp_path) == ["a", "m.json"]


def test_write_json_refuses_nan_and_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    files.write_json(target, {"x": 1})
    with pytest.raises(ValueError):
        files.write_json(target, {"x": float("nan")})
    assert json.loads(target.read_text()) == {"x": 1}
    assert entries(tmp_path) == ["m.json"]


def test_failed_file_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(Boom), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert entries(tmp_path) == []


def test_failed_file_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    files.write_text(target, "old")
    with pytest.raises(Boom), files.atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise Boom
    assert target.read_text() == "old"
    assert entries(tmp_path) == ["out.txt"]


def test_block_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing was written"), files.atomic_path(tmp_path / "x"):
        pass
    assert entries(tmp_path) == []


def test_directory_is_replaced_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "splits"
    target.mkdir()
    (target / "stale.jsonl").write_text("old")
    with files.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "train.jsonl").write_text("new")
    assert entries(target) == ["train.jsonl"]
    assert entries(tmp_path) == ["splits"]


def test_failed_directory_write_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "splits"
    target.mkdir()
    (target / "train.jsonl").write_text("old")
    with pytest.raises(Boom), files.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "train.jsonl").write_text("new")
        raise Boom
    assert entries(target) == ["train.jsonl"] and (target / "train.jsonl").read_text() == "old"
    assert entries(tmp_path) == ["splits"]


def test_read_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"r\.jsonl:3: not valid JSON"):
        files.read_jsonl(path)
    path.write_text('{"a": 1}\n[1]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"r\.jsonl:2: expected a JSON object, got list"):
        files.read_jsonl(path)
