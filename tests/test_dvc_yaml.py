"""dvc.yaml lists, for every stage, exactly the library modules the stage imports.

A module missing from a stage's deps would let a code change go unnoticed by `dvc repro`;
an extra one would rerun the stage for nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pubmedqa_peft.methods import registry

ROOT = Path(__file__).resolve().parents[1]
STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def _module_files(dotted: str) -> set[str]:
    """The file of a module, and the ``__init__.py`` of every package it is in (Python runs them)."""
    parts = dotted.split(".")
    found = {"/".join(parts[:i]) + "/__init__.py" for i in range(1, len(parts) + 1)}
    found.add("/".join(parts) + ".py")
    return found


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pubmedqa_peft":
            found |= _module_files(node.module)
            # `from package import module` imports the module too.
            for a in node.names:
                found |= _module_files(f"{node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "pubmedqa_peft":
                    found |= _module_files(a.name)
    return {m for m in found if (ROOT / m).is_file()}


def _closure(module: str) -> set[str]:
    seen, todo = {"pubmedqa_peft/__init__.py"}, [module]
    while todo:
        for m in _imports(ROOT / todo.pop()) - seen:
            seen.add(m)
            todo.append(m)
    return seen


def _module(stage: str) -> str:
    """The stage module a dvc.yaml stage runs: train_<method> stages share stages/train.py."""
    return "train" if stage.startswith("train_") else stage


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_its_imports(stage):
    deps = {d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]}
    module = _module(stage)
    expected_cmd = "python -m stages.train ${method}" if module == "train" else f"python -m stages.{stage}"
    assert STAGES[stage]["cmd"] == expected_cmd
    assert f"stages/{module}.py" in deps
    listed = {d for d in deps if d.startswith("pubmedqa_peft/")}
    assert listed == _closure(f"stages/{module}.py")


def test_one_train_stage_per_registered_method_sharing_one_definition():
    train = {name: stage for name, stage in STAGES.items() if name.startswith("train_")}
    assert sorted(train) == sorted(f"train_{m}" for m in registry.names())
    for name, stage in train.items():
        # Each stage names its own method; everything else is the shared anchor's.
        assert stage["vars"] == [{"method": name.removeprefix("train_")}]
        assert {k: v for k, v in stage.items() if k != "vars"} == {
            k: v for k, v in STAGES["train_prompt"].items() if k != "vars"
        }
    assert STAGES["train_prompt"]["params"] == ["model", "task", "train", "train_${method}"]


def test_data_stages_read_only_their_own_params():
    # clean keeps the task's labels: it reads the task section, shared with training and evaluation.
    for stage, section in (("ingest", "ingest"), ("clean", "task"), ("split", "split")):
        assert STAGES[stage]["params"] == [section]
