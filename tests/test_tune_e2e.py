"""End to end: ``python -m pubmedqa_peft.tune`` workers on the tiny-model pipeline, sharing one study.

One lean copy of the finished pipeline (the shared ``pipeline_repo``, evaluation made cheap) serves
both tests. Workers are real processes: two share a SQLite study while one of them is killed
mid-trial and a rerun takes its place; then two share a study on a PostgreSQL server started
here on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from e2e_support import commit_all, dvc, env, git, set_params
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from pubmedqa_peft import tune

pytestmark = pytest.mark.e2e

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Evaluation reduced to what the objective needs: no few-shot baselines, few resamples.
LEAN = {"evaluate.fewshot_k": [], "evaluate.bootstrap": 20, "evaluate.latency_samples": 1, "evaluate.latency_warmup": 0}
WORKER_TIMEOUT_S = 600
HEARTBEAT_S = 2


@pytest.fixture(scope="module")
def tune_repo(pipeline_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finished pipeline, evaluated with LEAN params and committed: the project a user tunes."""
    repo = tmp_path_factory.mktemp("tune") / "repo"
    git(pipeline_repo, "clone", "-q", str(pipeline_repo), str(repo))
    dvc(repo, "cache", "dir", "--local", str(pipeline_repo / ".dvc" / "cache"))
    dvc(repo, "checkout")
    set_params(repo, LEAN)
    dvc(repo, "repro", "evaluate")
    commit_all(repo, "lean evaluation")
    return repo


def _worker(repo: Path, log: Path, *args: str) -> subprocess.Popen:
    # Its own session: killing the group is a machine dying, the worker's dvc child included.
    return subprocess.Popen(
        [sys.executable, "-m", "pubmedqa_peft.tune", "--method", "lora", "--heartbeat", str(HEARTBEAT_S), *args],
        cwd=repo, env=env(), stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"worker still running after {WORKER_TIMEOUT_S} s:\n{log.read_text()[-3000:]}") from None
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _clone_dir(log: Path) -> Path:
    """The temporary directory of a worker's clone, as its log names it."""
    line = next(line for line in log.read_text().splitlines() if "worker clone: " in line)
    return Path(line.split("worker clone: ")[1]).parent


def _experiments(repo: Path) -> dict[str, float]:
    """``dvc exp show``: experiment name -> its val.lora.macro_f1."""
    rows = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    found = {}
    for row in rows:
        for exp in row.get("experiments") or []:
            data = exp["revs"][-1]["data"]
            found[exp["name"]] = data["metrics"]["metrics/eval.json"]["data"]["val"]["lora"]["macro_f1"]
    return found


def _check_study(repo: Path, study: optuna.Study, trials: int) -> list[optuna.trial.FrozenTrial]:
    """Every complete trial is a distinct experiment in ``dvc exp show`` with the trial's value."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # N in total; two workers that check at the same instant may each start one more.
    assert trials <= len(complete) <= trials + 1, [(t.number, t.state.name) for t in study.trials]
    names = [t.user_attrs["dvc_exp"] for t in complete]
    assert len(set(names)) == len(names)
    shown = _experiments(repo)
    for t in complete:
        assert shown[t.user_attrs["dvc_exp"]] == t.value
    assert study.trials[0].user_attrs["dvc_exp"] == f"{study.study_name}-0"
    # The user's workspace is untouched: trials ran in the workers' clones.
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    return complete


def test_two_workers_share_a_sqlite_study_and_a_killed_workers_trial_is_redone(tune_repo: Path, tmp_path: Path):
    url = f"sqlite:///{tmp_path}/study.db"
    common = ("--trials", "2", "--study", "lite", "--storage", url)
    a = _worker(tune_repo, tmp_path / "a.log", *common)
    b = _worker(tune_repo, tmp_path / "b.log", *common)
    # Kill A in the middle of its first trial (its dvc exp run under way), as a machine dies.
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    killed = None
    # The test opens the database as a worker does: the workers may be creating Optuna's tables
    # right now, and a plain optuna.load_study would race them (CI saw "UNIQUE constraint failed").
    storage = tune.open_storage(url, HEARTBEAT_S)
    while killed is None:
        assert time.monotonic() < deadline and a.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
        time.sleep(1)
        try:
            study = optuna.load_study(study_name="lite", storage=storage)
        except KeyError:  # not created yet
            continue
        mine = [
            t
            for t in study.get_trials(states=(TrialState.RUNNING,))
            if t.user_attrs.get("worker", "").endswith(f"-{a.pid}")
        ]
        if mine and (time.time() - mine[0].datetime_start.timestamp()) > 4:
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
            killed = mine[0].number
    # A rerun takes A's place beside B; between them they finish the study, the dead trial included.
    c = _worker(tune_repo, tmp_path / "c.log", *common)
    out_b, out_c = _finish(b, tmp_path / "b.log"), _finish(c, tmp_path / "c.log")

    study = optuna.load_study(study_name="lite", storage=url)
    complete = _check_study(tune_repo, study, 2)
    assert study.trials[killed].state == TrialState.FAIL
    (retry,) = [t for t in complete if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed]
    assert retry.params == study.trials[killed].params
    for out in (out_b, out_c):
        assert "\nbest trial " in out and "\nreproduce:\n  dvc exp apply lite-" in out
    # The dead worker's clone is its own; nothing of it is in the project.
    shutil.rmtree(_clone_dir(tmp_path / "a.log"), ignore_errors=True)
    # A rerun after the end runs nothing and prints the same answer.
    again = subprocess.run(
        [sys.executable, "-m", "pubmedqa_peft.tune", "--method", "lora", *common],
        cwd=tune_repo, env=env(), capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(optuna.load_study(study_name="lite", storage=url).trials) == len(study.trials)
    assert again.stdout.strip() == tune.format_best(study, "val.lora.macro_f1")
    best = study.best_trial
    assert f"\n  dvc exp apply {best.user_attrs['dvc_exp']}\n  dvc exp run -S ++train_lora.lr=" in again.stdout

    # The best experiment applies to the workspace with the value the study recorded.
    dvc(tune_repo, "exp", "apply", study.best_trial.user_attrs["dvc_exp"])
    applied = json.loads((tune_repo / "metrics" / "eval.json").read_text())["val"]["lora"]["macro_f1"]
    assert applied == study.best_value
    git(tune_repo, "reset", "-q", "--hard")
    dvc(tune_repo, "checkout", "-q")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 (a random free port), its password-bearing URL; stopped after."""
    if not (PG_BIN / "pg_ctl").is_file() or shutil.which("runuser") is None:
        pytest.skip(f"PostgreSQL 15 binaries not found in {PG_BIN} (Debian: apt-get install postgresql)")
    # initdb refuses root: the server runs as `postgres`, in a directory that user owns.
    base = Path(tempfile.mkdtemp(prefix="pubmedqa-pg-"))
    shutil.chown(base, "postgres", "postgres")
    password, port = "tune-s3cret", _free_port()
    (base / "pw").write_text(password)
    shutil.chown(base / "pw", "postgres", "postgres")

    def as_postgres(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)

    as_postgres(str(PG_BIN / "initdb"), "-D", str(base / "data"), "-U", "tuner", f"--pwfile={base / 'pw'}",
                "--auth=scram-sha-256")  # fmt: skip
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w", "start",
                "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1")  # fmt: skip
    try:
        yield f"postgresql+psycopg2://tuner:{password}@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_a_study_on_a_postgresql_server(tune_repo: Path, tmp_path: Path, postgres: str):
    workers_env = {**env(), "PUBMEDQA_TUNE_STORAGE": postgres}  # the password stays out of argv and params.yaml
    logs = [tmp_path / "p1.log", tmp_path / "p2.log"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pubmedqa_peft.tune", "--method", "lora", "--trials", "2", "--study", "pg"],
            cwd=tune_repo, env=workers_env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
        )
        for log in logs
    ]  # fmt: skip
    outs = [_finish(p, log) for p, log in zip(procs, logs, strict=True)]
    study = optuna.load_study(study_name="pg", storage=postgres)
    complete = _check_study(tune_repo, study, 2)
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both workers did trials
    for out in outs:
        assert "tune-s3cret" not in out
        assert "postgresql+psycopg2://***@127.0.0.1:" in out  # where the study lives, password hidden
        assert f"best trial {study.best_trial.number}: val.lora.macro_f1 = " in out
