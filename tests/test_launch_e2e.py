"""End to end with real ``dvc``: training in two processes as a user asks for it (``-S train.processes=2``)."""

from __future__ import annotations

import pytest
from e2e_support import dvc, read_json

pytestmark = pytest.mark.e2e


def test_dvc_exp_run_trains_in_two_processes_with_the_batch_per_process(clone) -> None:
    before = read_json(clone / "metrics" / "train" / "lora.json")
    dvc(clone, "exp", "run", "-S", "train.processes=2", "train_lora")
    after = read_json(clone / "metrics" / "train" / "lora.json")
    assert (before["processes"], after["processes"]) == (1, 2)
    assert after["global_batch_size"] == 2 * before["global_batch_size"]
    # Each process takes train.batch_size examples per step: half the optimizer steps.
    assert after["steps"] == before["steps"] // 2
    curve = (clone / "plots" / "train" / "lora" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    steps = [int(line.split("\t")[0]) for line in curve]
    assert steps == sorted(set(steps)) and steps[-1] == after["steps"]  # rank 0 alone wrote the curve
    assert "train_lora" not in dvc(clone, "status", "train_lora").stdout  # recorded in dvc.lock
    assert not (clone / ".checkpoints" / "lora").exists()
