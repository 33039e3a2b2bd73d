"""Helpers for end-to-end tests: a committed copy of the project in a temporary git repo.

DVCLive and ``dvc exp`` need a git repo with at least one commit, and queued
experiments see only files git tracks, so every end-to-end test works on such a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

PROJECT = Path(__file__).resolve().parents[1]
# What a user's clone holds: the files git tracks or would track, minus pipeline outputs.
SKIP = ("data/", "models/", "metrics/", "plots/", "reports/", ".checkpoints/", ".dvc/cache", ".dvc/tmp")

# Small enough for 2 CPU cores, large enough that every stage does real work (fewshot_k5
# prompts need the 256 tokens; 64 training examples give 8 optimizer steps).
E2E_PARAMS = {
    "model.max_source_length": 256,
    "train.epochs": 2,
    "train.max_train_examples": 64,
    "train.logging_steps": 2,
    "evaluate.bootstrap": 200,
    "evaluate.latency_samples": 5,
    "evaluate.latency_warmup": 1,
}


def env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first, a fixed git identity."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(
        GIT_AUTHOR_NAME="e2e",
        GIT_AUTHOR_EMAIL="e2e@example.invalid",
        GIT_COMMITTER_NAME="e2e",
        GIT_COMMITTER_EMAIL="e2e@example.invalid",
        DVC_NO_ANALYTICS="1",
        TQDM_DISABLE="1",
    )
    return e


def run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in ``cwd``; on failure the assertion shows its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``dvc`` CLI of this environment."""
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def git(cwd: Path, *args: str) -> str:
    """Run git and return its stdout."""
    return run(cwd, "git", *args).stdout


def set_params(repo: Path, updates: dict[str, Any]) -> None:
    """Set dotted keys in the repo's params.yaml, keeping its comments."""
    yaml = YAML()
    # params.yaml's own layout (`    - 3` under a key), long lines kept whole: a second
    # round trip of a file re-indented by the first one joined `plot:` to its next line.
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    path = repo / "params.yaml"
    doc = yaml.load(path.read_text())
    for dotted, value in updates.items():
        node = doc
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    with path.open("w") as fh:
        yaml.dump(doc, fh)


def make_repo(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """Copy the project into ``dest`` as a fresh, committed git + DVC repo.

    Args:
        dest: An empty directory.
        params: Dotted params.yaml keys to override before the first commit.

    Returns:
        ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    listed = run(PROJECT, "git", "ls-files", "--cached", "--others", "--exclude-standard").stdout.split()
    for rel in listed:
        src = PROJECT / rel
        if rel.startswith(SKIP) or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    if params:
        set_params(dest, params)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "project")
    return dest


def commit_all(repo: Path, message: str) -> None:
    """Commit every change (e.g. dvc.lock and cache-less outputs after a run)."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, "--allow-empty")


def status(repo: Path) -> dict[str, Any]:
    """``dvc status --json``: the stages whose deps, params or outs changed."""
    return json.loads(dvc(repo, "status", "--json").stdout or "{}")


def would_run(repo: Path) -> set[str]:
    """The stages ``dvc repro`` would run now (``dvc repro --dry``), downstream ones included."""
    out = dvc(repo, "repro", "--dry").stdout
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def read_json(path: Path) -> Any:
    """Load a JSON file."""
    return json.loads(path.read_text())
