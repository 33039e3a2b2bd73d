"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real PubMedQA files live beside the project (../shared), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pubmedqa"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding the real ``ori_pqal.json`` and ``test_ground_truth.json``.

    Skips the test (with the reason) if ``../shared/data/pubmedqa`` is absent.
    """
    needed = ("ori_pqal.json", "test_ground_truth.json")
    if not all((SHARED_DATA / name).is_file() for name in needed):
        pytest.skip(f"real PubMedQA data not found at {SHARED_DATA} (expected {', '.join(needed)})")
    return SHARED_DATA
