"""Stage ``ingest``: fetch the raw PubMedQA PQA-L file (or a PQA-A one, see README "Large data") and verify its SHA-256.

Inputs:
    ``ingest.source`` (URL or local path, e.g. ``../shared/data/pubmedqa/ori_pqal.json``).
Outputs:
    ``data/raw/ori_pqal.json``.
Params:
    ``ingest.source``, ``ingest.sha256``, ``ingest.timeout_s``.
"""

from __future__ import annotations

from pubmedqa_peft.config import Params
from pubmedqa_peft.fetch import ingest
from pubmedqa_peft.stage import run


def _body(params: Params) -> None:
    ingest(params.ingest)


def main() -> None:
    """Run the stage."""
    run("ingest", _body)


if __name__ == "__main__":
    main()
