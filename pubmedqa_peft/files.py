"""How outputs are written: atomically, so a killed stage never leaves half a file.

Every writer goes to a temporary sibling first and then renames it over the target;
a rename within one file system is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path that replaces ``target`` only if the block succeeds.

    Works for a file or a directory: whatever the block creates at the yielded
    path is moved to ``target``. On error the temporary is removed and ``target``
    is left as it was.

    Args:
        target: The final path.

    Yields:
        A fresh, not yet existing path beside ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp = tmp_root / target.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {target}")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def write_text(target: Path | str, text: str) -> None:
    """Atomically write UTF-8 text to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: Path | str, data: bytes) -> None:
    """Atomically write bytes to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: Path | str, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (keys kept in insertion order)."""
    write_text(target, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(target: Path | str, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically write one JSON object per line, as ``rows`` yields them (never all held at once)."""
    with atomic_path(target) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Read a JSON-lines file written by :func:`write_jsonl`.

    Raises:
        ValueError: Naming the file and line of a line that is not a JSON object.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        return [row for lineno, line in enumerate(fh, start=1) if (row := jsonl_row(line, path, lineno)) is not None]


def jsonl_row(line: str, path: Path | str, lineno: int) -> dict[str, Any] | None:
    """One line of a JSON-lines file as :func:`read_jsonl` reads it: its object, ``None`` if blank.

    Raises:
        ValueError: Naming the file and line, if the line is not a JSON object.
    """
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{lineno}: not valid JSON: {err.msg}") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    return row
