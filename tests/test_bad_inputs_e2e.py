"""Bad inputs through the real stages (issue 16): one error line, no traceback, nothing half-written.

Each case changes one thing in a copy of a finished pipeline run (the ``clone`` fixture)
and runs the stage it reaches as a user would, ``python -m stages.<name>`` or ``dvc
repro``. Every case must exit non-zero with exactly one ``error:`` line on stderr that
names the key, file or record and what to do; no Python traceback; and no temporary or
partial output anywhere in the project.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from e2e_support import dvc, run, set_params

pytestmark = pytest.mark.e2e


def _stage(repo: Path, *args: str) -> tuple[int, str, str]:
    proc = run(repo, sys.executable, "-m", *args, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _temporaries(repo: Path) -> list[Path]:
    """Leftovers of pubmedqa_peft.files.atomic_path (``.<name>.*.tmp``) outside git's and DVC's own folders."""
    return [p for p in repo.rglob(".*.tmp") if ".git" not in p.parts and ".dvc" not in p.parts]


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


def _fails_cleanly(repo: Path, returncode: int, stderr: str, *expected: str) -> str:
    assert returncode != 0
    line = _one_error_line(stderr)
    for text in expected:
        assert text in line, line
    assert not _temporaries(repo)
    return line


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tarin": {"epochs": 1}}, ["tarin: unknown section; allowed sections here: model, ingest"]),
        ({"train.epochs": float("inf")}, ["train.epochs: Input should be a finite number"]),
        ({"train.batch_size": True}, ["train.batch_size:", "not a boolean"]),
        ({"evaluate.tau": 0.2}, ["evaluate.tau: Input should be greater than or equal to 0.5"]),
        ({"train_lora.quantize": "2bit"}, ["train_lora.quantize:", "'2bit'"]),
    ],
    ids=["typo-section", "inf-epochs", "bool-batch", "tau-range", "bad-quantize"],
)
def test_invalid_params_stop_the_first_stage(clone, change, expected):
    if "tarin" in change:
        with (clone / "params.yaml").open("a") as fh:
            fh.write("tarin:\n  epochs: 1\n")
    else:
        set_params(clone, change)
    before = (clone / "metrics" / "params_check.json").read_bytes()
    code, _, err = _stage(clone, "stages.check_params")
    _fails_cleanly(clone, code, err, "error: stage check_params: params.yaml: invalid parameters:", *expected)
    # The stage's own output is only ever replaced whole (DVC, not the stage, deletes it).
    assert (clone / "metrics" / "params_check.json").read_bytes() == before


def test_a_target_module_the_model_lacks_names_the_ones_it_has(clone):
    set_params(clone, {"train_lora.target_modules": ["q", "query_proj"]})
    adapter = (clone / "models" / "lora" / "adapter_model.safetensors").read_bytes()
    code, _, err = _stage(clone, "stages.train", "lora")
    _fails_cleanly(
        clone,
        code,
        err,
        "train_lora.target_modules: the model (T5ForConditionalGeneration) has no module named 'query_proj'",
        "its linear layers are: k, lm_head, o, q, v, wi_0, wi_1, wo",
    )
    assert (clone / "models" / "lora" / "adapter_model.safetensors").read_bytes() == adapter


def test_fewshot_k_beyond_the_training_split_stops_evaluate_before_scoring(clone):
    set_params(clone, {"evaluate.fewshot_k": [3, 2000]})
    before = (clone / "metrics" / "eval.json").read_bytes()
    code, _, err = _stage(clone, "stages.evaluate")
    _fails_cleanly(clone, code, err, "evaluate.fewshot_k: few-shot k=2000: need", "lower or drop 2000")
    assert "scoring base" not in err
    assert (clone / "metrics" / "eval.json").read_bytes() == before


def test_a_pickle_only_adapter_is_refused_before_anything_is_scored(clone):
    adapter = clone / "models" / "ia3"
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    start = time.perf_counter()
    code, _, err = _stage(clone, "stages.evaluate")
    _fails_cleanly(
        clone, code, err, "models/ia3 has no adapter_model.safetensors (it has pickle weights, which are refused)"
    )
    assert "scoring" not in err and time.perf_counter() - start < 60


@pytest.mark.parametrize(
    ("source", "expected", "secrets"),
    [
        (
            "http://alice:s3cret@127.0.0.1:9/ori_pqal.json?token=abc123",
            ["ingest.source: could not download http://***@127.0.0.1:9/ori_pqal.json?token=***"],
            ["s3cret", "abc123", "alice"],
        ),
        (
            "file://otherhost/etc/ori_pqal.json",
            ["ingest.source: 'file://otherhost/etc/ori_pqal.json' names host 'otherhost'", "file:///abs/path"],
            [],
        ),
    ],
    ids=["credentials-redacted", "file-url-with-host"],
)
def test_bad_sources_fail_with_one_line_and_no_secret(clone, source, expected, secrets):
    set_params(clone, {"ingest.source": source, "ingest.timeout_s": 2})
    before = (clone / "data" / "raw" / "ori_pqal.json").read_bytes()
    code, out, err = _stage(clone, "stages.ingest")
    _fails_cleanly(clone, code, err, *expected)
    assert not any(s in out + err for s in secrets)
    assert (clone / "data" / "raw" / "ori_pqal.json").read_bytes() == before


def test_a_failed_stage_names_the_later_outputs_it_leaves_stale(clone):
    # The official split needs the official test ids; point them at a file that is not there.
    set_params(clone, {"split.strategy": "official", "split.official_test_ids": "missing/test_ground_truth.json"})
    proc = dvc(clone, "repro", check=False)
    line = _fails_cleanly(clone, proc.returncode, proc.stderr, "error: stage split:", "split.official_test_ids")
    assert (
        "; later outputs stale until this stage succeeds: " in line
        and "models/lora" in line
        and "metrics/eval.json" in line
    )
    assert line.endswith("(fix the problem, then run `dvc repro`)")
