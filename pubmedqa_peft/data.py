"""Reading the raw PubMedQA PQA-L file and cleaning it into one table of yes/no records.

The raw file is one JSON object mapping each PMID to a record with ``QUESTION``,
``CONTEXTS`` (list of passages), ``final_decision`` (yes/no/maybe), ``LONG_ANSWER``,
``YEAR`` and ``MESHES``. Cleaning produces one row per kept record::

    {"id", "question", "context", "label", "long_answer", "year", "meshes"}

Two kinds of bad input are told apart:

* A file or record whose *structure* is wrong (not UTF-8, not JSON, not an object of
  objects, a field of the wrong type, a key repeated inside one record) is an error:
  nothing sensible can be kept from it, so the stage stops and names the file, the
  record and what is wrong.
* A well-formed record whose *content* is unusable is dropped and counted by reason
  (see :data:`DROP_REASONS`), with a warning naming it. A missing ``QUESTION`` key is
  treated like an empty or null question (``empty_question``), and a missing
  ``CONTEXTS`` or ``final_decision`` key like an empty or null one: in every case the
  record has no question/context/label to learn from, which is what a user wants
  counted, while the other records stay usable. If nothing at all is left the stage
  stops, since that means the file is not PQA-L.

Duplicates are found two ways, and the first copy in file order is kept in both:

* by id: a PMID repeated in the raw text (``duplicate_id``);
* by content: a record whose question and context are those of a record already kept,
  under another PMID (``duplicate_content``). Two copies of one example would otherwise
  be two records that can land in different splits, i.e. test leakage. What counts as
  "the same" is :func:`content_key`.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pubmedqa_peft import files, paths
from pubmedqa_peft.config import TaskConfig
from pubmedqa_peft.provenance import provenance
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import Task

log = logging.getLogger(__name__)

LABEL_VALUES = ("yes", "no", "maybe")
"""The labels PQA-L uses, matched exactly (case-sensitive, no trimming)."""

DROP_REASONS = ("duplicate_id", "invalid_label", "empty_question", "empty_context", "maybe", "duplicate_content")
"""Why a record is dropped, in the order checked: each dropped record counts once, under
the first reason that applies. ``maybe`` (a valid label that ``task.labels``
excludes) comes after the defects so that a ``maybe`` record with a defect is reported as
the defect. ``duplicate_content`` comes last: only a record that would otherwise be kept
is compared with the records kept before it, so a record is never dropped for repeating
one that was itself dropped (a ``yes`` record after a ``maybe`` copy of it is kept), and
empty questions or contexts never count as equal content."""

MAX_DROP_WARNINGS = 20
"""Dropped records named one by one in the log; the rest are summarised in one line."""

COLUMNS = ("id", "question", "context", "label", "long_answer", "year", "meshes")


class _RawObject(dict):
    """A JSON object that keeps the first value of a key repeated in the raw text.

    The later ``(key, value)`` pairs of repeated keys are kept aside in ``repeated``.
    """

    repeated: list[tuple[str, Any]]


def _keep_first(pairs: list[tuple[str, Any]]) -> _RawObject:
    """``object_pairs_hook`` for :func:`json.loads` that sees repeated keys instead of hiding them."""
    obj = _RawObject()
    obj.repeated = []
    for key, value in pairs:
        if key in obj:
            obj.repeated.append((key, value))
        else:
            obj[key] = value
    return obj


@dataclass(frozen=True)
class RawRecord:
    """One top-level entry of the raw file; ``duplicate`` marks a later entry of a repeated PMID."""

    pmid: str
    value: Any
    duplicate: bool


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace (incl. Unicode spaces and newlines) to one space and strip."""
    # str.split() splits at exactly the characters regex \s matches (both use str.isspace),
    # and is ~3x faster than re.sub(r"\s+", " ", text).strip(), which it replaces.
    return " ".join(text.split())


def _fold(text: str) -> str:
    return normalize_whitespace(unicodedata.normalize("NFKC", text.casefold()))


def content_key(row: Mapping[str, Any]) -> tuple[str, str]:
    """What makes two clean rows the same example, whatever their ids.

    The row's ``question`` and ``context`` (a missing or null one counts as empty),
    each case-folded (:meth:`str.casefold`), put in Unicode NFKC form (so ligatures,
    full-width letters, superscripts and composed vs. combining accents compare equal)
    and whitespace-normalised (:func:`normalize_whitespace`; clean rows already are, and
    their context is the non-empty passages joined by one space, so passage breaks do not
    matter). Punctuation, digits and word order are compared as they are.

    Args:
        row: A clean row (or any mapping with ``question`` and ``context``).

    Returns:
        ``(question, context)`` in that comparison form.
    """
    return _fold(row.get("question") or ""), _fold(row.get("context") or "")


def read_json_object(path: Path | str) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Read a UTF-8 JSON file whose top level must be an object.

    Args:
        path: The file.

    Returns:
        The object (first value kept for a repeated key) and the duplicate top-level
        ``(key, value)`` pairs that were not kept, in file order.

    Raises:
        PipelineError: If the file is missing, empty, not UTF-8 (naming the byte), not
            JSON (naming line and column), or its top level is not an object.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except OSError as err:
        raise PipelineError(f"{path}: could not read: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PipelineError(
            f"{path}: not valid UTF-8 at byte {err.start} (line {line}, byte 0x{data[err.start]:02x}); "
            "the file must be UTF-8 encoded"
        ) from None
    text = text.removeprefix("\ufeff")  # a BOM is not JSON, but harmless
    if not text.strip():
        raise PipelineError(f"{path}: the file is empty; expected a JSON object")

    try:
        parsed = json.loads(text, object_pairs_hook=_keep_first)
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise PipelineError(f"{path}: JSON nested too deeply") from None
    if not isinstance(parsed, _RawObject):
        kind = {list: "an array (list)", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(parsed), f"a {type(parsed).__name__}"
        )
        raise PipelineError(f"{path}: the top level is {kind}; expected a JSON object keyed by PMID")
    return parsed, list(parsed.repeated)


READ_BYTES = 1 << 20
"""Bytes read from the raw file at a time."""

LOOKAHEAD_CHARS = 1 << 20
"""Characters kept decoded ahead of the next record: a record shorter than this is parsed in one go."""

TRUNCATION_MARGIN = 64
"""A JSON error this close to the end of the decoded text may be a record cut by the buffer, not a real one."""

_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
_RECORD_DECODER = json.JSONDecoder(object_pairs_hook=_keep_first)


class _RawReader:
    """The raw file as UTF-8 text read in chunks, with positions as :func:`read_json_object` reports them.

    Only the unparsed tail of the text is held (at least :data:`LOOKAHEAD_CHARS` of it
    while the file lasts); lines and columns of errors are counted over the whole file,
    after a leading BOM, exactly as :func:`json.loads` on the whole text counts them.
    """

    def __init__(self, fh: Any, path: Path) -> None:
        self.fh, self.path = fh, path
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._pending = b""  # the start of a UTF-8 sequence cut by a chunk boundary
        self._bytes_done = 0  # bytes decoded before _pending
        self._byte_lines = 0  # newlines among them
        self._line_base = 0  # newlines in the text dropped before buf
        self._col_base = 0  # characters between the last of them and buf
        self._bom_checked = False

    def _fill(self, size: int = READ_BYTES) -> None:
        chunk = self.fh.read(size)
        self.eof = not chunk
        data = self._pending + chunk
        try:
            text, used = codecs.utf_8_decode(data, "strict", self.eof)
        except UnicodeDecodeError as err:
            at = self._bytes_done + err.start
            line = self._byte_lines + data.count(b"\n", 0, err.start) + 1
            raise PipelineError(
                f"{self.path}: not valid UTF-8 at byte {at} (line {line}, byte 0x{data[err.start]:02x}); "
                "the file must be UTF-8 encoded"
            ) from None
        self._byte_lines += data.count(b"\n", 0, used)
        self._bytes_done += used
        self._pending = data[used:]
        if not self._bom_checked and text:
            text = text.removeprefix("\ufeff")  # a BOM is not JSON, but harmless
            self._bom_checked = True
        # Drop what was parsed before appending, so only the unparsed tail is held.
        self._line_base += self.buf.count("\n", 0, self.pos)
        last = self.buf.rfind("\n", 0, self.pos)
        self._col_base = self.pos - last - 1 if last >= 0 else self._col_base + self.pos
        self.buf = self.buf[self.pos :] + text
        self.pos = 0

    def ahead(self, chars: int = LOOKAHEAD_CHARS) -> None:
        """Decode until ``chars`` characters lie ahead of ``pos`` or the file ends."""
        while not self.eof and len(self.buf) - self.pos < chars:
            self._fill()

    def skip_whitespace(self) -> str:
        """Move past JSON whitespace; the next character, or ``""`` at the end of the file."""
        while True:
            self.pos = _JSON_WHITESPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos : self.pos + 1]
            self._fill()

    def scan(self, decode: Any) -> Any:
        """``decode(buf, pos) -> (value, end)`` on the text ahead, reading more if a value is cut off."""
        while True:
            self.ahead()
            try:
                value, self.pos = decode(self.buf, self.pos)
                return value
            except json.JSONDecodeError as err:
                cut = err.pos >= len(self.buf) - TRUNCATION_MARGIN or err.msg.startswith("Unterminated string")
                if self.eof or not cut:
                    raise self.error(err.msg, err.pos) from None
                # A value longer than the look-ahead: read as much again and parse it anew.
                self._fill(max(READ_BYTES, 4 * len(self.buf)))
            except RecursionError:
                raise self.error(None, self.pos) from None

    def error(self, msg: str | None, at: int) -> PipelineError:
        """The error :func:`read_json_object` gives for ``msg`` at ``buf[at]``, once the rest is UTF-8-checked.

        A UTF-8 error anywhere in the file wins, as it does when the whole file is decoded first.
        """
        newlines = self.buf.count("\n", 0, at)
        if newlines:
            line, column = self._line_base + newlines + 1, at - self.buf.rfind("\n", 0, at)
        else:
            line, column = self._line_base + 1, self._col_base + at + 1
        self.drain()
        if msg is None:
            return PipelineError(f"{self.path}: JSON nested too deeply")
        return PipelineError(f"{self.path}: not valid JSON at line {line}, column {column}: {msg}")

    def drain(self) -> None:
        """Read the rest of the file, checking only that it is UTF-8."""
        while not self.eof:
            self.buf, self.pos = "", 0
            self._fill()

    def expect(self, char: str, msg: str) -> None:
        if self.skip_whitespace() != char:
            raise self.error(msg, self.pos)
        self.pos += 1


def iter_raw(path: Path | str = paths.RAW_RECORDS) -> Iterator[RawRecord]:
    """The raw file's top-level entries in file order, read in chunks (bounded memory).

    Yields the same entries as :func:`read_raw`, except that a repeated PMID comes where
    it is in the file (``duplicate=True``) rather than after the rest. The file is never
    held whole: only the part not yet parsed (about :data:`LOOKAHEAD_CHARS` characters)
    and the PMIDs seen so far. Errors are those of :func:`read_json_object`, with the
    same lines and columns; a UTF-8 error anywhere in the file wins over a JSON error, as
    there. A file whose top level is not an object is read by :func:`read_json_object`
    for its message.

    Args:
        path: The raw ``ori_pqal.json`` (or a PQA-A ``ori_pqaa.json``).

    Yields:
        One :class:`RawRecord` per top-level entry.

    Raises:
        PipelineError: As :func:`read_json_object`.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except OSError as err:
        raise PipelineError(f"{path}: could not read: {err.strerror or err}") from None
    with fh:
        reader = _RawReader(fh, path)
        try:
            first = reader.skip_whitespace()
        except OSError as err:
            raise PipelineError(f"{path}: could not read: {err.strerror or err}") from None
        if first != "{":
            # Empty, or not an object: not worth streaming; the whole-file reader names the problem.
            obj, repeated = read_json_object(path)
            yield from (RawRecord(pmid, value, False) for pmid, value in obj.items())
            yield from (RawRecord(pmid, value, True) for pmid, value in repeated)
            return
        reader.pos += 1
        seen: set[str] = set()
        # The object grammar of json's C scanner (_parse_object_unicode), with its messages.
        char = reader.skip_whitespace()
        while char != "}" or seen:  # "}" may close an empty object, not follow a ","
            if char != '"':
                raise reader.error("Expecting property name enclosed in double quotes", reader.pos)
            pmid = reader.scan(lambda buf, pos: json.decoder.scanstring(buf, pos + 1, True))
            reader.expect(":", "Expecting ':' delimiter")
            reader.skip_whitespace()
            value = reader.scan(_RECORD_DECODER.raw_decode)
            yield RawRecord(pmid, value, pmid in seen)
            seen.add(pmid)
            char = reader.skip_whitespace()
            if char == "}":
                break
            if char != ",":
                raise reader.error("Expecting ',' delimiter", reader.pos)
            reader.pos += 1
            char = reader.skip_whitespace()
        reader.pos += 1
        if reader.skip_whitespace():
            raise reader.error("Extra data", reader.pos)


def read_raw(path: Path | str = paths.RAW_RECORDS) -> list[RawRecord]:
    """Read the raw PQA-L file into its top-level entries, repeated PMIDs included.

    A JSON object's keys may repeat in the raw text; the first entry of a PMID is the
    record, later ones are returned with ``duplicate=True`` so they can be counted. This
    holds every record; the clean stage streams them instead (:func:`iter_raw`).

    Args:
        path: The raw ``ori_pqal.json``.

    Returns:
        The entries: the kept ones in file order, then the repeated ones.

    Raises:
        PipelineError: As :func:`read_json_object`.
    """
    entries = list(iter_raw(path))
    return [e for e in entries if not e.duplicate] + [e for e in entries if e.duplicate]


def _text_field(record: dict[str, Any], key: str, where: str) -> str | None:
    """A string field, whitespace-normalised; ``None`` if missing or null."""
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PipelineError(f"{where}: {key} must be a string or null, got {type(value).__name__} {value!r:.60}")
    return normalize_whitespace(value)


def _string_list(record: dict[str, Any], key: str, where: str) -> list[str] | None:
    """A list-of-strings field, each item normalised; ``None`` if missing or null."""
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise PipelineError(f"{where}: {key} must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise PipelineError(f"{where}: {key}[{i}] must be a string, got {type(item).__name__} {item!r:.60}")
    return [normalize_whitespace(item) for item in value]


def _year(record: dict[str, Any], where: str) -> str | None:
    value = record.get("YEAR")
    if isinstance(value, bool):
        raise PipelineError(f"{where}: YEAR must be a string, integer or null, got {value!r}")
    if isinstance(value, int):
        return str(value)
    text = _text_field(record, "YEAR", where)
    return text or None


def parse_record(pmid: str, value: Any, source: str = "raw") -> tuple[dict[str, Any], str | None]:
    """Validate one raw record's structure and build its clean row.

    Args:
        pmid: The record's key in the raw file.
        value: The record.
        source: The file name, for messages.

    Returns:
        The clean row and the reason it must be dropped (``None`` to keep it); the
        ``maybe`` reason is not decided here since it depends on ``task.labels``.

    Raises:
        PipelineError: Naming the file and PMID, if the record is not an object, repeats
            a key, or has a field of the wrong type.
    """
    where = f"{source}: record {pmid!r}"
    if not pmid.strip() or pmid != pmid.strip():
        raise PipelineError(f"{where}: a PMID must be non-empty and have no surrounding whitespace")
    if not isinstance(value, dict):
        raise PipelineError(f"{where}: expected an object with QUESTION, CONTEXTS, ..., got {type(value).__name__}")
    repeated = getattr(value, "repeated", [])
    if repeated:
        raise PipelineError(f"{where}: key {repeated[0][0]!r} appears more than once in the record")

    question = _text_field(value, "QUESTION", where)
    contexts = _string_list(value, "CONTEXTS", where)
    context = " ".join(c for c in contexts or [] if c)
    label = value.get("final_decision")
    row = {
        "id": pmid,
        "question": question or "",
        "context": context,
        "label": label,
        "long_answer": _text_field(value, "LONG_ANSWER", where) or "",
        "year": _year(value, where),
        "meshes": [m for m in _string_list(value, "MESHES", where) or [] if m],
    }
    if not isinstance(label, str) or label not in LABEL_VALUES:
        return row, "invalid_label"
    if not question:
        return row, "empty_question"
    if not context:
        return row, "empty_context"
    return row, None


@dataclass(frozen=True)
class CleanResult:
    """What cleaning kept and dropped."""

    records: list[dict[str, Any]]
    """The kept rows; empty when they were streamed to a file instead (see ``kept``)."""
    records_in: int
    dropped: dict[str, int]
    dropped_records: list[tuple[str, str, str]] = field(default_factory=list)
    """``(pmid, reason, detail)`` of every dropped record except plain ``maybe`` ones."""
    kept_labels: tuple[str, ...] = ("yes", "no")
    """The task's labels (``task.labels``)."""
    kept: Mapping[str, int] | None = None
    """Kept rows per label, counted as they were written; ``None``: count ``records``."""

    @property
    def records_out(self) -> int:
        """How many rows were kept."""
        return len(self.records) if self.kept is None else sum(self.kept.values())

    @property
    def labels(self) -> dict[str, int]:
        """Kept records per label of the task: ``yes``, ``no`` (and ``maybe``)."""
        counts = Counter(r["label"] for r in self.records) if self.kept is None else self.kept
        return {label: counts.get(label, 0) for label in Task.of(self.kept_labels).display}


def content_digest(row: Mapping[str, Any]) -> bytes:
    """A 128-bit digest of :func:`content_key`: equal for equal keys, and small enough to keep per record.

    Holding the digests rather than the folded texts is what keeps de-duplication of a
    PQA-A-sized file in bounded memory (16 bytes a record instead of its text); two
    different keys colliding is a 2^-64 chance even at billions of records.
    """
    question, context = content_key(row)
    digest = hashlib.blake2b(digest_size=16)
    # The length prefix keeps ("ab", "c") and ("a", "bc") apart.
    digest.update(f"{len(question)}:{question}\0{context}".encode("utf-8", "surrogatepass"))
    return digest.digest()


class _Cleaner:
    """Cleans entries one at a time, holding only counts, ids and content digests."""

    def __init__(self, keep_labels: Iterable[str], source: str) -> None:
        self.keep_labels = tuple(keep_labels)
        self.keep = set(self.keep_labels)
        self.source = source
        self.records_in = 0
        self.kept: Counter[str] = Counter()
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.dropped_records: list[tuple[str, str, str]] = []
        self.dropped_repeats: list[tuple[str, str, str]] = []  # repeated PMIDs: listed last, as read_raw orders them
        self.kept_content: dict[bytes, tuple[str, str]] = {}  # content_digest -> (id, label) of the kept row

    def feed(self, entry: RawRecord) -> dict[str, Any] | None:
        """The clean row of ``entry``, or ``None`` if it is dropped (and counted).

        Raises:
            PipelineError: On a structurally bad record (see :func:`parse_record`).
        """
        row, reason = parse_record(entry.pmid, entry.value, self.source)
        self.records_in += 1
        first = None
        if entry.duplicate:
            reason = "duplicate_id"
        elif reason is None and row["label"] not in self.keep:
            reason = "maybe" if row["label"] == "maybe" else "invalid_label"
        elif reason is None:
            this = (row["id"], row["label"])
            first = self.kept_content.setdefault(content_digest(row), this)
            if first is not this:
                reason = "duplicate_content"
        if reason is None:
            self.kept[row["label"]] += 1
            return row
        self.dropped[reason] += 1
        listed = self.dropped_repeats if entry.duplicate else self.dropped_records
        if reason == "invalid_label":
            listed.append((entry.pmid, reason, f"final_decision={row['label']!r}"))
        elif reason == "duplicate_content" and first is not None:
            listed.append((entry.pmid, reason, _duplicate_detail(first, row)))
        elif reason != "maybe":
            listed.append((entry.pmid, reason, ""))
        return None

    def result(self, records: list[dict[str, Any]] | None = None) -> CleanResult:
        """What was cleaned (``records``: the kept rows, if they were held).

        Raises:
            PipelineError: If no record was kept.
        """
        if not self.kept:
            raise PipelineError(
                f"{self.source}: no record left after cleaning ({self.records_in} in, dropped "
                f"{_nonzero(self.dropped)}); is this the PubMedQA PQA-L file (ori_pqal.json)?"
            )
        listed = self.dropped_records + self.dropped_repeats
        kept = None if records is not None else dict(self.kept)
        return CleanResult(records or [], self.records_in, self.dropped, listed, self.keep_labels, kept)


def clean_records(entries: Sequence[RawRecord], keep_labels: Iterable[str], source: str = "raw") -> CleanResult:
    """Clean raw entries into yes/no rows, counting every dropped record by reason.

    Args:
        entries: As returned by :func:`read_raw`.
        keep_labels: Labels to keep (``task.labels``).
        source: The file name, for messages.

    Returns:
        The kept rows (in file order; no two share an id or a :func:`content_key`) and the
        drop counts; ``records_in`` equals the rows kept plus all drops.

    Raises:
        PipelineError: On a structurally bad record (see :func:`parse_record`) or if no
            record is left.
    """
    cleaner = _Cleaner(keep_labels, source)
    rows = [row for entry in entries if (row := cleaner.feed(entry)) is not None]
    return cleaner.result(rows)


def _clean_stream(raw_path: Path, cleaner: _Cleaner) -> Iterator[dict[str, Any]]:
    """The kept rows of the raw file read by :func:`iter_raw`, with the errors of :func:`clean_records`.

    Which error is reported when there are several stays as with the whole file read
    first: a UTF-8 or JSON error anywhere, then the first bad record in file order, then
    the first bad repeated PMID (:func:`read_raw` lists those last), then "no record left".
    """
    entries = iter_raw(raw_path)
    repeat_error: PipelineError | None = None
    for entry in entries:
        try:
            row = cleaner.feed(entry)
        except PipelineError as err:
            if entry.duplicate:
                repeat_error = repeat_error or err
                continue
            for _ in entries:  # the rest of the file may hold a UTF-8 or JSON error, which comes first
                pass
            raise
        if row is not None and repeat_error is None:
            yield row
    if repeat_error is not None:
        raise repeat_error
    cleaner.result()  # "no record left" is an error before the table replaces the old one


def _duplicate_detail(first: tuple[str, str], row: dict[str, Any]) -> str:
    first_id, first_label = first
    detail = f"same question and context as record {first_id}"
    if first_label != row["label"]:
        # Worth a look: the same example answered both ways is a labelling error upstream.
        detail += f", which is labelled {first_label!r}, this one {row['label']!r}"
    return detail


def _nonzero(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "none"


def clean_metrics(result: CleanResult, cfg: TaskConfig) -> dict[str, Any]:
    """The clean stage's metrics: counts in/out, drops by reason, labels and provenance."""
    return {
        "records_in": result.records_in,
        "records_out": result.records_out,
        "dropped": dict(result.dropped),
        "labels": result.labels,
        "provenance": provenance(task=cfg),
    }


def log_drops(result: CleanResult, limit: int = MAX_DROP_WARNINGS) -> None:
    """Log one line per drop reason and a warning per dropped defective record (capped)."""
    for reason, count in result.dropped.items():
        log.info("clean: dropped %d record(s): %s", count, reason)
    for pmid, reason, detail in result.dropped_records[:limit]:
        log.warning("clean: dropped record %s: %s%s", pmid, reason, f" ({detail})" if detail else "")
    if len(result.dropped_records) > limit:
        log.warning("clean: ... and %d more dropped record(s) not listed", len(result.dropped_records) - limit)


def clean(
    cfg: TaskConfig,
    raw_path: Path = paths.RAW_RECORDS,
    out_path: Path = paths.CLEAN_RECORDS,
    metrics_path: Path = paths.CLEAN_METRICS,
) -> CleanResult:
    """The clean stage's work: read the raw file, clean it, write the table and metrics.

    Args:
        cfg: The ``task`` section (its labels are kept).
        raw_path: The raw ``ori_pqal.json``.
        out_path: The clean JSON-lines table.
        metrics_path: The metrics JSON.

    Returns:
        The cleaning result.

    Raises:
        PipelineError: On bad input; nothing is written then.
    """
    if not Path(raw_path).exists():
        raise PipelineError(f"{raw_path}: not found; run the ingest stage first (dvc repro ingest)")
    # Rows go to the file as they are cleaned: memory holds ids and content digests, not the table.
    cleaner = _Cleaner(cfg.labels, str(raw_path))
    files.write_jsonl(out_path, _clean_stream(Path(raw_path), cleaner))
    result = cleaner.result()
    log_drops(result)
    files.write_json(metrics_path, clean_metrics(result, cfg))
    by_label = ", ".join(f"{label} {n}" for label, n in result.labels.items())
    log.info("clean: %d records in, %d out (%s) -> %s", result.records_in, result.records_out, by_label, out_path)
    return result
