"""A PQA-A-sized raw file made from the real PQA-L records, for scaling the data stages.

PubMedQA's artificial set PQA-A (``ori_pqaa.json``, 211,269 records) has PQA-L's record
shape without the ``reasoning_*`` keys, and only ``yes``/``no`` labels (196,144 yes,
15,125 no). It is not available offline, so this module writes a stand-in of any size
with the same shape and label proportions::

    python -m pubmedqa_peft.large_data /tmp/pqaa/ori_pqaa.json --records 211269 --seed 0

Every record gets a new id (``9`` followed by eight digits: no real PMID of PQA-L or
PQA-A has nine digits starting with 9, so none can collide with the official test ids)
and new text: the question is a real PQA-L question with its inner words shuffled, the
contexts are sentences drawn across all PQA-L records, so no two records share their
content and the clean stage keeps them all. Which records are ``no`` is drawn so that
their number is exactly PQA-A's share, rounded. The same ``--seed`` and ``--records``
give the same bytes.

The file is written record by record (never held as one string), atomically, and its
SHA-256 is printed for ``ingest.sha256``. The file is large (about 2.4 KB a record, so
~0.5 GB at PQA-A's size): write it outside the project, never into git.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pubmedqa_peft import files
from pubmedqa_peft.data import read_json_object
from pubmedqa_peft.stage import PipelineError

PQAA_RECORDS = 211_269
PQAA_NO = 15_125
"""PQA-A's size and its number of ``no`` records (the rest are ``yes``)."""

DEFAULT_SOURCE = Path("../shared/data/pubmedqa/ori_pqal.json")
FIRST_ID = 900_000_000
"""New ids are ``FIRST_ID + i``: nine digits starting with 9, unlike any real PMID in PubMedQA."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


@dataclass(frozen=True)
class _Pools:
    """What new records are drawn from: the pieces of every PQA-L record."""

    questions: list[list[str]]
    sentences: list[str]
    labels: list[str]
    meshes: list[str]
    years: list[str]
    long_answers: list[str]


def _pools(records: dict[str, Any]) -> _Pools:
    questions, sentences, labels, meshes, years, long_answers = [], [], [], [], [], []
    for rec in records.values():
        questions.append(str(rec.get("QUESTION") or "").split())
        for passage in rec.get("CONTEXTS") or []:
            sentences.extend(s for s in _SENTENCE_END.split(passage) if s)
        labels.extend(rec.get("LABELS") or [])
        meshes.extend(rec.get("MESHES") or [])
        if rec.get("YEAR"):
            years.append(str(rec["YEAR"]))
        if rec.get("LONG_ANSWER"):
            long_answers.append(rec["LONG_ANSWER"])
    if not (questions and sentences and labels and long_answers):
        raise PipelineError("large_data: the source holds no usable PQA-L record (QUESTION, CONTEXTS, LONG_ANSWER)")
    # Sorted so that the pools do not depend on dict order, only on the records.
    return _Pools(questions, sentences, sorted(set(labels)), sorted(set(meshes)), sorted(set(years)), long_answers)


def _question(rng: random.Random, pools: _Pools) -> str:
    words = list(rng.choice(pools.questions)) or ["Does", "it", "work?"]
    # Keep the first word (Do/Is/Does ...) and the last one (with its "?") in place.
    inner = words[1:-1]
    rng.shuffle(inner)
    return " ".join([words[0], *inner, *words[1:][-1:]])


def make_record(rng: random.Random, pools: _Pools, label: str) -> dict[str, Any]:
    """One PQA-A-shaped record with text recombined from ``pools``.

    Args:
        rng: The generator's random state (advanced).
        pools: The PQA-L pieces.
        label: Its ``final_decision`` (``yes`` or ``no``).

    Returns:
        ``QUESTION, CONTEXTS, LABELS, MESHES, YEAR, final_decision, LONG_ANSWER``.
    """
    n_passages = rng.randint(2, 4)
    contexts = [" ".join(rng.choices(pools.sentences, k=rng.randint(2, 5))) for _ in range(n_passages)]
    record = {
        "QUESTION": _question(rng, pools),
        "CONTEXTS": contexts,
        "LABELS": rng.choices(pools.labels, k=n_passages),
        "MESHES": rng.sample(pools.meshes, k=min(len(pools.meshes), rng.randint(3, 10))),
        "YEAR": rng.choice(pools.years) if pools.years else None,
        "final_decision": label,
        "LONG_ANSWER": rng.choice(pools.long_answers),
    }
    return record


def no_positions(records: int, rng: random.Random) -> set[int]:
    """Which of ``records`` records are labelled ``no``: PQA-A's share, rounded half up."""
    n_no = (records * PQAA_NO * 2 + PQAA_RECORDS) // (2 * PQAA_RECORDS)
    return set(rng.sample(range(records), n_no))


def write_pqaa(out: Path | str, records: int, seed: int = 0, source: Path | str = DEFAULT_SOURCE) -> str:
    """Write a PQA-A-shaped raw file of ``records`` records.

    Args:
        out: The file to write (atomically; its directory is created).
        records: How many records (>= 1).
        seed: Seed of every random choice; the same seed gives the same bytes.
        source: The real PQA-L file the text is drawn from.

    Returns:
        The SHA-256 of the written file (for ``ingest.sha256``).

    Raises:
        PipelineError: If ``records`` < 1 or the source is unreadable or holds no record.
    """
    if records < 1:
        raise PipelineError(f"large_data: --records must be at least 1, got {records}")
    pools = _pools(read_json_object(source)[0])
    rng = random.Random(seed)
    no = no_positions(records, rng)
    digest = hashlib.sha256()
    with files.atomic_path(out) as tmp, tmp.open("wb") as fh:

        def put(text: str) -> None:
            data = text.encode("utf-8")
            digest.update(data)
            fh.write(data)

        put("{")
        for i in range(records):
            record = make_record(rng, pools, "no" if i in no else "yes")
            put(("\n" if i == 0 else ",\n") + f'    "{FIRST_ID + i}": ' + json.dumps(record, ensure_ascii=False))
        put("\n}\n")
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Command line: write the file, print its record count and SHA-256."""
    parser = argparse.ArgumentParser(prog="python -m pubmedqa_peft.large_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="file to write (outside the project: it is large)")
    parser.add_argument("--records", type=int, default=PQAA_RECORDS, help=f"records to write (default {PQAA_RECORDS})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"PQA-L file (default {DEFAULT_SOURCE})")
    args = parser.parse_args(argv)
    try:
        sha = write_pqaa(args.out, args.records, args.seed, args.source)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.records} records to {args.out}")
    print(f"sha256 {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
