"""The README's recipes do what its text says, checked against DVC's rules, dvc.yaml and the code."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from readme_support import commands, commands_starting, option

from pubmedqa_peft import modeling
from pubmedqa_peft.methods import registry

PROJECT = Path(__file__).resolve().parents[1]

# --- `dvc exp show` recipe ------------------------------------------------------------------

# The columns `dvc exp show` starts from, before --keep/--drop (dvc/repo/experiments/show.py);
# State and Executor are dropped by DVC itself when no experiment has one.
DVC_FIXED_COLUMNS = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")
KEPT_FIXED_COLUMNS = {"Experiment", "Created", "State"}
SPLITS = ("val", "test")
PEFT_METHODS = registry.names()
OTHER_METHODS = ("base", "fewshot_k3", "majority", "tfidf_logreg")
METRIC_NAMES = ("accuracy", "macro_f1", "macro_f1_ci_low", "roc_auc", "ece", "latency_median_s")


def _flatten(doc: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _matching(pattern: str, columns: Iterable[str]) -> set[str]:
    # As DVC applies --keep and --drop (dvc/commands/experiments/show.py:
    # `re.compile("|".join(drop)).match(col)`): anchored at the start of the name only.
    regex = re.compile(pattern)
    return {col for col in columns if regex.match(col)}


def _dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))


def _columns() -> tuple[set[str], set[str]]:
    """``(params columns, every other column)`` of this project's ``dvc exp show``."""
    params = set(_flatten(yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))))
    metrics = {f"{s}.{m}.{n}" for s in SPLITS for m in PEFT_METHODS + OTHER_METHODS for n in METRIC_NAMES}
    metrics |= {"final_train_loss", "trainable_params", "provenance.git_rev", "provenance.config.model.name"}
    for path in (PROJECT / "metrics" / "data").glob("*.json"):  # the committed data metrics, as they are
        metrics |= set(_flatten(yaml.safe_load(path.read_text(encoding="utf-8"))))
    deps = {
        next(iter(dep)) if isinstance(dep, dict) else dep
        for stage in _dvc_yaml()["stages"].values()
        for dep in stage.get("deps", [])
    }
    return params, set(DVC_FIXED_COLUMNS) | metrics | deps


def test_readme_exp_show_recipes_are_one_recipe() -> None:
    recipes = commands_starting("dvc", "exp", "show", "--only-changed")
    assert {(option(r, "--keep"), option(r, "--drop")) for r in recipes} == {
        (option(recipes[0], "--keep"), option(recipes[0], "--drop"))
    }


def test_readme_exp_show_keeps_state_experiment_created_and_params_and_drops_the_rest() -> None:
    recipe = commands_starting("dvc", "exp", "show", "--only-changed")[0]
    params, others = _columns()
    columns = params | others
    kept = columns - _matching(option(recipe, "--drop"), columns)

    assert kept == params | KEPT_FIXED_COLUMNS  # State included: it is how a failed experiment shows
    assert _matching(option(recipe, "--keep"), columns) == {f"{s}.{m}.macro_f1" for s in SPLITS for m in PEFT_METHODS}


# --- a committed baseline before `dvc metrics diff main ...` ---------------------------------


def _outputs() -> Iterator[tuple[str, bool]]:
    """``(path, cached)`` of every output, metric and plot file of dvc.yaml's stages."""
    for stage in _dvc_yaml()["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                yield path, (opts or {}).get("cache", True)


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(f"{root}/") for root in roots)


def test_readme_commits_what_a_run_leaves_to_git_before_diffing_against_main() -> None:
    all_commands = commands()
    (add,) = commands_starting("git", "add", "dvc.lock")
    pathspecs = add[2:]
    tracked = set(subprocess.run(["git", "ls-files"], cwd=PROJECT, capture_output=True, text=True).stdout.split())
    outputs = list(_outputs())
    # DVC writes a .gitignore beside each cached output; outputs with `cache: false` are git's.
    to_git = {f"{PurePosixPath(path).parent}/.gitignore" if cached else path for path, cached in outputs}

    missed = sorted(path for path in to_git if not _under(path, pathspecs) and path not in tracked)
    assert not missed, f"after a run these would be left uncommitted: {missed}"
    # dvc.lock is written by every run, params.yaml by `dvc exp run -S` (the offline run's values).
    unknown = [
        p for p in pathspecs if p not in ("dvc.lock", "params.yaml") and not any(_under(path, [p]) for path in to_git)
    ]
    assert not unknown, f"git add names paths no stage writes (it would fail): {unknown}"

    # Committed before the experiment that the first diff against main compares, so it is main's.
    commit = all_commands.index(add) + 1
    assert all_commands[commit][:3] == ["git", "commit", "-m"]
    diff = next(i for i, c in enumerate(all_commands) if c[:4] == ["dvc", "metrics", "diff", "main"])
    experiment = all_commands[diff][4]
    made = next(i for i, c in enumerate(all_commands) if c[:3] == ["dvc", "exp", "run"] and experiment in c)
    assert commit < made < diff


# --- one place for the offline smoke-test model ----------------------------------------------


def _tiny_model_places(cmds: list[list[str]]) -> tuple[list[str], list[str]]:
    """``(random_model tiny-t5 output dirs, model.name values of a tiny-t5)`` named in ``cmds``."""
    built = [c[4] for c in cmds if c[:4] == ["python", "-m", "pubmedqa_peft.random_model", "tiny-t5"]]
    used = [a.split("=", 1)[1] for c in cmds for a in c if a.startswith("model.name=") and a.endswith("tiny-t5")]
    return built, used


def test_offline_model_is_built_and_used_in_one_absolute_place_by_readme_and_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    place = modeling.OFFLINE_MODEL_DIR
    monkeypatch.setenv("HOME", "/home/someone")
    expanded = os.path.expandvars(place)
    assert "$" not in expanded and os.path.isabs(expanded)  # absolute: also right in .dvc/tmp/exps/ copies

    advice = [shlex.split(code) for code in re.findall(r"`([^`]+)`", modeling.local_directory_advice())]
    for source, cmds in (("README", commands()), ("local_directory_advice", advice)):
        built, used = _tiny_model_places(cmds)
        assert built and used, f"{source} names no tiny-t5 build or model.name"
        assert set(built) == set(used) == {place}, source
