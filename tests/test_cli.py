"""The package is installed (import and the ``pubmedqa-peft`` command work from anywhere) and dispatches."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pubmedqa_peft import cli

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "pubmedqa-peft"


def _run_outside(tmp_path: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a directory outside the project, with no PYTHONPATH to find it by."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)


def test_package_imports_from_outside_the_project(tmp_path: Path) -> None:
    proc = _run_outside(tmp_path, sys.executable, "-c", "import pubmedqa_peft; print(pubmedqa_peft.__file__)")
    assert proc.returncode == 0, f"{proc.stderr}\nnot installed? run `pip install -r requirements.txt`"
    # Editable: the checkout's own files, so edits take effect without reinstalling.
    assert Path(proc.stdout.strip()) == PROJECT / "pubmedqa_peft" / "__init__.py"


def test_only_the_library_is_installed(tmp_path: Path) -> None:
    for name in ("stages", "tests", "benchmarks"):
        proc = _run_outside(tmp_path, sys.executable, "-c", f"import {name}")
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, name


def test_console_script_lists_every_command(tmp_path: Path) -> None:
    assert SCRIPT.is_file(), f"no {SCRIPT}: run `pip install -r requirements.txt`"
    proc = _run_outside(tmp_path, str(SCRIPT), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: pubmedqa-peft")
    for name, command in cli.COMMANDS.items():
        assert f"  {name}" in proc.stdout and command.help in proc.stdout
    assert "best" in cli.COMMANDS


def test_console_script_runs_the_command_module(tmp_path: Path) -> None:
    # The command's own parser answers --help, so the dispatcher passed it through.
    proc = _run_outside(tmp_path, str(SCRIPT), "random-model", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "tiny-t5" in proc.stdout and "--corpus" in proc.stdout


def test_every_command_names_a_module_with_main() -> None:
    for name, command in cli.COMMANDS.items():
        assert importlib.util.find_spec(command.module) is not None, name


def test_arguments_reach_the_module_unchanged_and_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []

    def fake_import(module: str) -> SimpleNamespace:
        return SimpleNamespace(main=lambda argv: calls.append((module, argv)))

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    cli.main(["best", "--metric", "val.lora.macro_f1", "--json"])
    cli.main(["random-model", "tiny-t5", "out dir", "--corpus", "c.json", "--help"])
    cli.main(["random-model"])
    assert calls == [
        ("pubmedqa_peft.experiments", ["best", "--metric", "val.lora.macro_f1", "--json"]),
        ("pubmedqa_peft.random_model", ["tiny-t5", "out dir", "--corpus", "c.json", "--help"]),
        ("pubmedqa_peft.random_model", []),
    ]


def test_unknown_or_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["train"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err
