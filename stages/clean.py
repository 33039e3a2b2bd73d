"""Stage ``clean``: parse the raw PQA-L file into one table of records with the task's labels.

The raw file is read in chunks and the rows written as they are cleaned, so a PQA-A-sized
file (211k records) costs time linear in its records and little memory (README "Large data").

Inputs:
    ``data/raw/ori_pqal.json``.
Outputs:
    ``data/clean/pqal.jsonl`` (id, question, context, label, long_answer, year, meshes),
    ``metrics/data/clean.json`` (records in/out, drops by reason, labels, provenance).
Params:
    ``task.labels``.
"""

from __future__ import annotations

from pubmedqa_peft.config import Params
from pubmedqa_peft.data import clean
from pubmedqa_peft.stage import run


def _body(params: Params) -> None:
    clean(params.task)


def main() -> None:
    """Run the stage."""
    run("clean", _body)


if __name__ == "__main__":
    main()
