"""dvc.yaml lists, for every stage, exactly the library modules the stage imports.

A module missing from a stage's deps would let a code change go unnoticed by `dvc repro`;
an extra one would rerun the stage for nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "pubmedqa_peft":
            found |= {f"pubmedqa_peft/{a.name}.py" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pubmedqa_peft."):
            found.add(node.module.replace(".", "/") + ".py")
        elif isinstance(node, ast.Import):
            found |= {a.name.replace(".", "/") + ".py" for a in node.names if a.name.startswith("pubmedqa_peft.")}
    return {m for m in found if (ROOT / m).is_file()}


def _closure(module: str) -> set[str]:
    seen, todo = {"pubmedqa_peft/__init__.py"}, [module]
    while todo:
        for m in _imports(ROOT / todo.pop()) - seen:
            seen.add(m)
            todo.append(m)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_its_imports(stage):
    deps = {d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]}
    assert STAGES[stage]["cmd"] == f"python -m stages.{stage}"
    assert f"stages/{stage}.py" in deps
    listed = {d for d in deps if d.startswith("pubmedqa_peft/")}
    assert listed == _closure(f"stages/{stage}.py")


def test_data_stages_read_only_their_own_params():
    for stage in ("ingest", "clean", "split"):
        assert STAGES[stage]["params"] == [stage]
