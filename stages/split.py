"""Stage ``split``: divide the clean table into train, val and test.

The records are split as small index entries and read back one at a time to be written
(README "Large data").

Inputs:
    ``data/clean/pqal.jsonl``; with ``split.strategy: official`` also
    ``split.official_test_ids`` (URL or local path, hash-checked, not kept).
Outputs:
    ``data/splits/{train,val,test}.jsonl``,
    ``metrics/data/split.json`` (counts per split and label, provenance).
Params:
    ``split`` (strategy, fractions, seed, official_test_ids, official_test_ids_sha256);
    ``ingest.timeout_s`` is the network timeout for fetching the official ids.
"""

from __future__ import annotations

from pubmedqa_peft.config import Params
from pubmedqa_peft.splits import split
from pubmedqa_peft.stage import run


def _body(params: Params) -> None:
    split(params.split, timeout_s=params.ingest.timeout_s)


def main() -> None:
    """Run the stage."""
    run("split", _body)


if __name__ == "__main__":
    main()
