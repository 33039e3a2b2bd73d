"""Dividing the cleaned records into train, val and test.

Two strategies (``split.strategy``):

* ``stratified``: ``split.fractions`` of the records per split, stratified by label so
  that the number of ``yes`` records in every split is within one example of its
  proportional share (``n_split * yes_total / total``).
* ``official``: the records whose PMIDs are among PubMedQA's 500 official test PMIDs
  (``split.official_test_ids``, hash-checked) form the test split; the others are
  stratified into train and val in the ratio ``fractions.train : fractions.val``.
  Official PMIDs not in the cleaned data (the ``maybe`` ones) are counted.

How it is made deterministic: records are first sorted by id, so the split depends on
the set of records, not on their order in the file. Split sizes and per-label counts are
computed exactly (largest-remainder rounding on rationals), then a ``random.Random``
seeded with ``split.seed`` shuffles each label's records, which are dealt out in
train/val/test order. Finally each split is shuffled with the same generator, so the
records of a split are stored in a seeded random order: its first N records are a
random sample (``train.max_train_examples`` relies on this).

No id may end up in two splits, nor may the same content (question and context, as
compared by :func:`pubmedqa_peft.data.content_key`) under two ids, and every input
record must end up in exactly one split: this is checked every run
(:func:`check_partition`), not only in the tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from pubmedqa_peft import files, paths
from pubmedqa_peft.config import SplitConfig
from pubmedqa_peft.data import content_digest, content_key, read_json_object
from pubmedqa_peft.fetch import fetch_verified
from pubmedqa_peft.provenance import provenance
from pubmedqa_peft.redaction import redact_url
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import DISPLAY_ORDER

log = logging.getLogger(__name__)

SPLIT_NAMES = paths.SPLIT_NAMES
TASK_LABELS = DISPLAY_ORDER
"""Labels a split may hold, in the order they are dealt (yes first, as always)."""

Splits = dict[str, list[dict[str, Any]]]


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Divide ``total`` items in proportion to ``weights`` (largest-remainder rounding).

    Computed on exact rationals (each weight rounded to the nearest fraction with a
    denominator up to 10^9, so 0.1 is exactly 1/10), hence identical on every platform.

    Args:
        total: Items to divide (>= 0).
        weights: Non-negative weights, not all zero unless ``total`` is 0.

    Returns:
        Integers summing to ``total``, each less than one away from its exact share
        ``total * w / sum(weights)``; ties in the remainder go to the earlier weight.

    Raises:
        ValueError: If a weight is negative or all are zero while ``total`` > 0.
    """
    exact = [Fraction(w).limit_denominator(10**9) for w in weights]
    if any(w < 0 for w in exact):
        raise ValueError(f"weights must be non-negative, got {list(weights)}")
    weight_sum = sum(exact, Fraction(0))
    if weight_sum == 0:
        if total:
            raise ValueError(f"cannot divide {total} items by all-zero weights")
        return [0] * len(exact)
    shares = [total * w / weight_sum for w in exact]
    counts = [math.floor(s) for s in shares]
    left = total - sum(counts)
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in by_remainder[:left]:
        counts[i] += 1
    return counts


def _by_label(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {label: [] for label in TASK_LABELS}
    for r in sorted(records, key=lambda r: r["id"]):
        if r["label"] not in groups:
            raise PipelineError(f"record {r['id']!r}: label {r['label']!r} is not one of {TASK_LABELS}")
        groups[r["label"]].append(r)
    # The labels present; yes and no are always dealt, even if one has no record.
    return {label: rs for label, rs in groups.items() if rs or label != "maybe"}


def _stratify(
    records: Sequence[dict[str, Any]], names: Sequence[str], weights: Sequence[float], rng: random.Random
) -> Splits:
    """Deal ``records`` into the named splits by ``weights``, stratified by label."""
    groups = _by_label(records)
    sizes = allocate(len(records), weights)
    # Each label but the last is divided in proportion to the room the splits have left
    # (for the first label, the split sizes), which keeps every split's count of it within
    # one of its exact share; the last label fills what is left, so the sizes add up by
    # construction and no count can go negative. With yes/no this is yes by size, no the rest.
    per_label: dict[str, list[int]] = {}
    room = list(sizes)
    *first, last = groups
    for label in first:
        per_label[label] = allocate(len(groups[label]), room) if sum(room) else [0] * len(room)
        room = [r - c for r, c in zip(room, per_label[label], strict=True)]
    per_label[last] = room
    out: Splits = {name: [] for name in names}
    for label in groups:
        pool = groups[label]
        rng.shuffle(pool)
        start = 0
        for name, count in zip(names, per_label[label], strict=True):
            out[name].extend(pool[start : start + count])
            start += count
    return out


def _shuffled(splits: Splits, rng: random.Random) -> Splits:
    for name in SPLIT_NAMES:
        rng.shuffle(splits[name])
    return splits


def stratified_split(records: Sequence[dict[str, Any]], fractions: Mapping[str, float], seed: int) -> Splits:
    """Split records into train/val/test by ``fractions``, stratified by label.

    Args:
        records: Clean records with unique ``id`` and ``label`` (yes, no or maybe).
        fractions: Share per split name (``train``, ``val``, ``test``), summing to 1.
        seed: Seed of the shuffle.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in a seeded random order.
    """
    rng = random.Random(seed)
    splits = _stratify(records, SPLIT_NAMES, [fractions[name] for name in SPLIT_NAMES], rng)
    return _shuffled(splits, rng)


def official_split(
    records: Sequence[dict[str, Any]], test_ids: Sequence[str] | set[str], fractions: Mapping[str, float], seed: int
) -> Splits:
    """Official test PMIDs as test; the other records stratified into train/val.

    Args:
        records: Clean records with unique ``id`` and ``label`` (yes, no or maybe).
        test_ids: The official test PMIDs (those absent from ``records`` are ignored;
            count them with :func:`missing_ids`).
        fractions: Shares per split name; only the ``train : val`` ratio is used.
        seed: Seed of the shuffle.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each in a seeded random order.

    Raises:
        PipelineError: If ``fractions.train + fractions.val`` is 0.
    """
    if fractions["train"] + fractions["val"] <= 0:
        raise PipelineError("split.fractions: train + val must be > 0 for the official strategy")
    wanted = set(test_ids)
    test = sorted((r for r in records if r["id"] in wanted), key=lambda r: r["id"])
    rest = [r for r in records if r["id"] not in wanted]
    rng = random.Random(seed)
    splits = _stratify(rest, ("train", "val"), [fractions["train"], fractions["val"]], rng)
    splits["test"] = test
    return _shuffled(splits, rng)


def missing_ids(records: Sequence[dict[str, Any]], ids: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """The ``ids`` that no record has, in their given order."""
    present = {r["id"] for r in records}
    return [i for i in ids if i not in present]


def _content_of(row: Mapping[str, Any]) -> bytes | None:
    """A row's :func:`~pubmedqa_peft.data.content_digest`; ``None`` for a row with neither question nor context."""
    return None if content_key(row) == ("", "") else content_digest(row)


def check_partition(
    splits: Mapping[str, Sequence[dict[str, Any]]],
    records: Sequence[dict[str, Any]],
    content: Callable[[Mapping[str, Any]], Hashable | None] = _content_of,
) -> None:
    """Check that the splits hold every record exactly once and share no id or content.

    Content is compared by :func:`~pubmedqa_peft.data.content_key`, so a record copied
    under another id (which cleaning drops, but a clean table from elsewhere may hold)
    cannot leak from train into test. The same content twice within one split is no
    leak and is let through; a record with neither question nor context has no content
    to compare.

    Args:
        splits: The split name -> records mapping to check.
        records: The records that were split.
        content: What a record's content is, ``None`` for none; by default its
            :func:`~pubmedqa_peft.data.content_digest` (index entries carry it precomputed).

    Raises:
        PipelineError: Naming the first id found in two splits (or twice in one), the
            first two ids in different splits with the same content, or the number of
            records lost or added.
    """
    where: dict[str, str] = {}
    first_with: dict[Hashable, tuple[str, str]] = {}  # content -> (id, split) seen first
    for name, rows in splits.items():
        for r in rows:
            if r["id"] in where:
                raise PipelineError(
                    f"split: record {r['id']!r} is in both {where[r['id']]} and {name}; splits must not overlap"
                )
            where[r["id"]] = name
            key = content(r)
            if key is None:
                continue
            first_id, first_split = first_with.setdefault(key, (r["id"], name))
            if first_split != name:
                raise PipelineError(
                    f"split: records {first_id!r} ({first_split}) and {r['id']!r} ({name}) have the same question "
                    "and context; splits must not overlap"
                )
    expected = {r["id"] for r in records}
    if set(where) != expected:
        lost, extra = len(expected - set(where)), len(set(where) - expected)
        raise PipelineError(f"split: {lost} record(s) are in no split and {extra} are not in the input")


def split_counts(splits: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Per split: ``{"total", "yes", "no"}``, and ``"maybe"`` when any split holds one."""
    present = {r["label"] for name in SPLIT_NAMES for r in splits[name]}
    shown = [label for label in TASK_LABELS if label in present or label != "maybe"]
    counts = {}
    for name in SPLIT_NAMES:
        labels = Counter(r["label"] for r in splits[name])
        counts[name] = {"total": len(splits[name]), **{label: labels[label] for label in shown}}
    return counts


def _universal_lines(fh: Any) -> Iterator[tuple[int, int, bytes]]:
    r"""``(offset, size, bytes)`` of each line as text mode reads it (``\n``, ``\r\n`` or ``\r`` ends one)."""
    offset = 0
    for raw in fh:
        body = raw[:-1] if raw.endswith(b"\n") else raw
        pieces = body.split(b"\r")
        if len(pieces) > 1 and not pieces[-1]:
            pieces.pop()  # "\r\n" (or a final "\r") ends the line before it
        at = offset
        for piece in pieces:
            yield at, len(piece), piece
            at += len(piece) + 1
        offset += len(raw)


def _clean_rows(path: Path) -> Iterator[tuple[dict[str, Any], int, int]]:
    """Each record of the clean table with its byte offset and size, checked as :func:`load_clean` says.

    Read line by line, holding only the ids seen. When several things are wrong the
    message is the one reading the whole file first gives: a line that is not a JSON
    object (or not UTF-8), then the first bad record, then "no records".
    """
    if not path.exists():
        raise PipelineError(f"{path}: not found; run the clean stage first (dvc repro clean)")
    seen: set[str] = set()
    problem: str | None = None
    with path.open("rb") as fh:
        for lineno, (offset, size, data) in enumerate(_universal_lines(fh), start=1):
            try:
                r = files.jsonl_row(data.decode("utf-8"), path, lineno)
            except UnicodeDecodeError as err:
                raise PipelineError(f"{path}:{lineno}: not UTF-8: {err}") from None
            except ValueError as err:
                raise PipelineError(str(err)) from None
            if r is None or problem is not None:
                continue  # blank; or past a bad record, where only a broken line could still come first
            rid = r.get("id")
            if not isinstance(rid, str) or not rid:
                problem = f"{path}: record {len(seen) + 1}: missing or non-string id"
            elif r.get("label") not in TASK_LABELS:
                problem = f"{path}: record {rid!r}: label {r.get('label')!r} is not yes, no or maybe"
            elif rid in seen:
                problem = f"{path}: record {rid!r} appears more than once"
            else:
                seen.add(rid)
                yield r, offset, size
    if problem is not None:
        raise PipelineError(problem)
    if not seen:
        raise PipelineError(f"{path}: no records")


def load_clean(path: Path | str = paths.CLEAN_RECORDS) -> list[dict[str, Any]]:
    """Read and check the cleaned table.

    Args:
        path: The clean JSON-lines file.

    Returns:
        Its records, in file order.

    Raises:
        PipelineError: If the file is missing, a line is not a JSON object, a record has
            no string ``id`` or a label other than yes/no/maybe, or an id repeats.
    """
    return [r for r, _offset, _size in _clean_rows(Path(path))]


def index_clean(path: Path | str = paths.CLEAN_RECORDS) -> list[dict[str, Any]]:
    """The cleaned table as small entries, checked as :func:`load_clean` checks it.

    Each entry is ``{"id", "label", "content", "at"}``: the record's id and label, its
    content digest (:func:`_content_of`) and where its line is (``(offset, size)`` in
    bytes), so the split functions and :func:`check_partition` work on entries of ~100
    bytes instead of whole records, and :func:`write_splits` reads each record back.

    Args:
        path: The clean JSON-lines file.

    Returns:
        One entry per record, in file order.

    Raises:
        PipelineError: As :func:`load_clean`.
    """
    return [
        {"id": r["id"], "label": r["label"], "content": _content_of(r), "at": (offset, size)}
        for r, offset, size in _clean_rows(Path(path))
    ]


def load_official_test_ids(cfg: SplitConfig, timeout_s: float) -> dict[str, Any]:
    """Fetch PubMedQA's official test PMIDs, hash-checked, keeping no file.

    The file is fetched into a temporary directory that is deleted afterwards, so the
    split stage has no extra output; its bytes are pinned by
    ``split.official_test_ids_sha256``.

    Args:
        cfg: The ``split`` section.
        timeout_s: Network timeout for a URL source.

    Returns:
        PMID -> official label, in file order.

    Raises:
        PipelineError: If the file cannot be fetched, fails the hash, is not a JSON
            object, or holds no PMID.
    """
    with tempfile.TemporaryDirectory(prefix="pubmedqa-official-") as tmp:
        path = Path(tmp) / "test_ground_truth.json"
        fetch_verified(
            cfg.official_test_ids,
            path,
            cfg.official_test_ids_sha256,
            timeout_s,
            "split.official_test_ids",
            sha256_key="split.official_test_ids_sha256",
        )
        ids, _repeated = read_json_object(path)
    if not ids:
        raise PipelineError(f"split.official_test_ids: {redact_url(cfg.official_test_ids)} holds no PMID")
    return dict(ids)


def _read_back(fh: Any, entries: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """The records of :func:`index_clean` entries, read back one at a time from the open clean table."""
    for entry in entries:
        offset, size = entry["at"]
        fh.seek(offset)
        yield json.loads(fh.read(size).decode("utf-8"))


def write_splits(
    splits: Mapping[str, Sequence[dict[str, Any]]],
    splits_dir: Path = paths.SPLITS_DIR,
    clean_path: Path | None = None,
) -> None:
    """Write ``<split>.jsonl`` for every split, replacing ``splits_dir`` as a whole atomically.

    Args:
        splits: The records of each split, or with ``clean_path`` its :func:`index_clean`
            entries, whose records are then read back from that file one at a time.
        splits_dir: The directory to replace.
        clean_path: The clean table the entries index, if they are entries.
    """
    with files.atomic_path(splits_dir) as tmp, contextlib.ExitStack() as stack:
        tmp.mkdir()
        fh = stack.enter_context(clean_path.open("rb")) if clean_path is not None else None
        for name in SPLIT_NAMES:
            rows = splits[name] if fh is None else _read_back(fh, splits[name])
            files.write_jsonl(tmp / paths.split_file(name).name, rows)


def split(
    cfg: SplitConfig,
    timeout_s: float = 30.0,
    clean_path: Path = paths.CLEAN_RECORDS,
    splits_dir: Path = paths.SPLITS_DIR,
    metrics_path: Path = paths.SPLIT_METRICS,
) -> Splits:
    """The split stage's work: split the clean table, check it, write splits and metrics.

    Args:
        cfg: The ``split`` section.
        timeout_s: Network timeout for fetching the official test ids.
        clean_path: The clean JSON-lines table.
        splits_dir: Directory receiving ``train/val/test.jsonl``.
        metrics_path: The metrics JSON.

    Returns:
        The splits as :func:`index_clean` entries (id, label, content digest, place in
        the clean table): the records themselves are read back only to be written, so
        memory holds ~100 bytes a record, not the table.

    Raises:
        PipelineError: On bad input, an unreachable official id file, an empty split or
            an overlap; nothing is written then.
    """
    records = index_clean(clean_path)
    fractions = cfg.fractions.model_dump()
    metrics: dict[str, Any] = {"strategy": cfg.strategy}
    if cfg.strategy == "official":
        official = load_official_test_ids(cfg, timeout_s)
        splits = official_split(records, list(official), fractions, cfg.seed)
        missing = missing_ids(records, official)
        by_label = Counter(str(official[i]) for i in missing)
        log.info(
            "split: %d of %d official test PMIDs not in %s: %s", len(missing), len(official), clean_path, dict(by_label)
        )
        disagree = [r["id"] for r in splits["test"] if official[r["id"]] != r["label"]]
        if disagree:
            log.warning(
                "split: %d test record(s) labelled differently in the official file, e.g. %s",
                len(disagree),
                disagree[0],
            )
    else:
        splits = stratified_split(records, fractions, cfg.seed)
    check_partition(splits, records, content=lambda entry: entry["content"])
    empty = [name for name in SPLIT_NAMES if not splits[name]]
    if empty:
        raise PipelineError(
            f"split: {', '.join(empty)} would be empty with {len(records)} records and split.fractions "
            f"{fractions}; raise those fractions or use more data"
        )
    counts = split_counts(splits)
    metrics["counts"] = counts
    metrics["total"] = len(records)
    if cfg.strategy == "official":
        metrics["official_ids_missing"] = len(missing)
        metrics["official_ids_missing_by_label"] = dict(sorted(by_label.items()))
    metrics["provenance"] = provenance(split=cfg)
    write_splits(splits, splits_dir, clean_path=Path(clean_path))
    files.write_json(metrics_path, metrics)
    for name in SPLIT_NAMES:
        c = counts[name]
        by_label = ", ".join(f"{label} {n}" for label, n in c.items() if label != "total")
        log.info("split (%s): %s %d records (%s)", cfg.strategy, name, c["total"], by_label)
    return splits
