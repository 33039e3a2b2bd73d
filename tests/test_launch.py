"""Several training processes (``train.processes``): the train stage under torch's launcher.

Each test runs the real stage (``python -m stages.train lora``) in a scratch directory
holding params.yaml and the splits; every 2-process run costs two workers' imports of
torch, transformers and PEFT (about 10-20 s here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from pubmedqa_peft import files, paths
from pubmedqa_peft.config import load_params
from pubmedqa_peft.launch import _worker_failure, launch_workers, under_launcher
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.training import run_training_stage

PROJECT = Path(__file__).resolve().parents[1]


def _workdir(tmp_path: Path, model_dir: Path, rows: list[dict], processes: int, **train: object) -> Path:
    """A directory in which ``python -m stages.train lora`` runs: params.yaml and the splits."""
    params = {
        "model": {"name": str(model_dir), "max_source_length": 96, "device": "cpu", "threads": 1},
        "train": {
            "epochs": 2,
            "eval_batch_size": 4,
            "logging_steps": 1,
            "warmup_ratio": 0.0,
            "processes": processes,
            **train,
        },
        "train_lora": {"lr": 0.01, "dropout": 0.0},
    }
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    files.write_jsonl(tmp_path / paths.split_file("train"), rows[:8])
    files.write_jsonl(tmp_path / paths.split_file("val"), rows[8:12])
    return tmp_path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT), "HF_HUB_OFFLINE": "1"}


def _train(workdir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "stages.train", "lora"]
    return subprocess.run(cmd, cwd=workdir, env=_env(), capture_output=True, text=True, timeout=300)


def _rows_of(tsv: Path) -> list[list[str]]:
    return [line.split("\t") for line in tsv.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def rows(pqal_rows):
    return pqal_rows[:12]


@pytest.fixture(scope="module")
def model_dir(tiny_t5_dir, tmp_path_factory):
    """The tiny T5 without dropout: the runs compared must draw no random numbers (each
    process has its own generator, so dropout masks would differ with 2 processes)."""
    copy = tmp_path_factory.mktemp("no_dropout") / "model"
    shutil.copytree(tiny_t5_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["dropout_rate"] = 0.0
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_outside_a_launcher_a_process_is_no_worker(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not under_launcher()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert under_launcher()


def _failure(exitcode: int, timestamp: int = 100):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    failure = ProcessFailure(local_rank=0, pid=1, exitcode=exitcode, error_file="<none>")
    failure.timestamp = timestamp
    return failure


def test_the_killed_worker_is_named_not_the_ones_the_launcher_stopped_after_it():
    # The launcher stops the other workers with SIGTERM, often within the same second.
    err = _worker_failure({0: _failure(-signal.SIGTERM), 1: _failure(-signal.SIGKILL)}, 2)
    assert isinstance(err, PipelineError)
    assert str(err).startswith("training worker 1 of 2 died (signal SIGKILL); nothing was written; rerun `dvc repro`")
    # A worker that raised printed its own message: the stage only exits with its status.
    err = _worker_failure({0: _failure(1, 101), 1: _failure(-signal.SIGTERM, 100), 2: _failure(2, 102)}, 3)
    assert isinstance(err, SystemExit) and err.code == 1
    # Stopped from outside with SIGTERM and nothing else: that is the cause.
    assert "worker 2 of 3 died (signal SIGTERM)" in str(_worker_failure({2: _failure(-signal.SIGTERM)}, 3))


def test_more_workers_than_gpus_stop_before_any_starts(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(PipelineError, match=r"train.processes is 4 but this machine has 2 GPU\(s\)"):
        launch_workers("train_lora", ["-c", "raise SystemExit(3)"], 4, "auto")


def test_two_processes_train_the_same_adapter_as_one_with_the_same_global_batch(tmp_path, model_dir, rows, monkeypatch):
    # 8 examples and a global batch of 8 (1 x 8, or 2 processes x 4): every step sees every
    # example whatever the order, and T5's loss is a per-batch mean with every answer one
    # word + EOS, so DDP's mean of the two halves' gradients is the one-process gradient.
    # The one-process run trains here, in this process, which has torch loaded already.
    one_dir = _workdir(tmp_path / "one", model_dir, rows, 1, batch_size=8)
    monkeypatch.chdir(one_dir)
    run_training_stage("lora", load_params())
    monkeypatch.chdir(tmp_path)
    two = _train(_workdir(tmp_path / "two", model_dir, rows, 2, batch_size=4))
    assert two.returncode == 0, two.stderr

    a = load_file(tmp_path / "one" / paths.adapter_dir("lora") / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / paths.adapter_dir("lora") / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    moved = max(a[k].abs().max().item() for k in a if "lora_B" in k)
    assert moved > 1e-3  # LoRA B starts at 0: training moved it
    assert diff < 1e-5, diff

    m1 = json.loads((tmp_path / "one" / paths.train_metrics_file("lora")).read_text())
    m2 = json.loads((tmp_path / "two" / paths.train_metrics_file("lora")).read_text())
    assert (m1["processes"], m1["global_batch_size"]) == (1, 8)
    assert (m2["processes"], m2["global_batch_size"]) == (2, 8)
    assert m1["steps"] == m2["steps"] == 2
    assert m2["final_train_loss"] == pytest.approx(m1["final_train_loss"], abs=1e-5)
    # Rank 0 alone wrote the curves: one row per step, none twice.
    for name in ("train", "eval"):
        curve = _rows_of(tmp_path / "two" / paths.train_plots_dir("lora") / "metrics" / name / "loss.tsv")
        assert [int(r[0]) for r in curve] == [1, 2], curve
    # The workers are gone and so are their checkpoints; the log reads as one run.
    assert not (tmp_path / "two" / paths.checkpoint_dir("lora")).exists()
    assert two.stderr.count("saving adapter") == 1, two.stderr
    assert two.stderr.count("stage train_lora: start") == two.stderr.count("stage train_lora: done") == 1, two.stderr


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RANK=")), None)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_a_killed_worker_fails_the_stage_in_one_line_and_writes_nothing(tmp_path, model_dir, rows):
    workdir = _workdir(tmp_path, model_dir, rows, 2, batch_size=4, epochs=30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train", "lora"],
        cwd=workdir,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Kill worker 1 once training is under way: after the first checkpoint.
        deadline = time.monotonic() + 240
        while not list((workdir / paths.checkpoint_dir("lora")).glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "training never reached a checkpoint"
            time.sleep(0.2)
        worker = next(p for p in _children(proc.pid) if _rank_of(p) == "1")
        os.kill(worker, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [stderr.splitlines()[-1]], stderr
    assert errors[0].startswith(
        "error: stage train_lora: training worker 1 of 2 died (signal SIGKILL); nothing was written; "
        "rerun `dvc repro` to resume from the last checkpoint"
    ), stderr
    assert "Traceback" not in stderr, stderr
    assert not (workdir / paths.adapter_dir("lora")).exists()
    assert not (workdir / paths.train_metrics_file("lora")).exists()
    assert not (workdir / paths.train_plots_dir("lora")).exists()

    # As the line says: the rerun resumes from the last checkpoint, and its curves have each step once.
    rerun = _train(workdir)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stderr
    curve = _rows_of(workdir / paths.train_plots_dir("lora") / "metrics" / "train" / "loss.tsv")
    assert [int(r[0]) for r in curve] == list(range(1, 31))
