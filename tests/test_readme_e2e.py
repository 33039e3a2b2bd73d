"""The README followed by a new offline user: its offline run, then every "Experiments" command.

The commands are read from README.md (``readme_support``), run exactly as printed by bash,
each must exit 0 (or fail where the README says it fails), and its output is checked against
what the README says about it; so this test breaks when the README's commands break.

The user: a fresh committed copy of the project (``e2e_support.make_repo``: no data, models,
metrics, plots or reports), HOME a temporary folder (the README's offline model
``$HOME/.cache/pubmedqa-peft/models/tiny-t5`` is built there), and beside the project a
``shared`` folder linking the real data, so the README's ``../shared/data/pubmedqa/...``
arguments work unchanged. The only deviation from the README: the first commit's params.yaml
carries the suite's small end-to-end settings (``e2e_support.E2E_PARAMS``: 64 training
examples, 2 epochs, 256 tokens, fewer bootstrap and latency samples), so the pipeline runs in
minutes on 2 CPU cores.

Not run, and why:

* Quickstart ``pip install -r requirements.txt``: needs the network (this environment is the
  installed result); ``dvc repro``: downloads PQA-L and flan-t5-small, and the README's
  "Running offline" says what to run instead, which is run here; ``pytest``: this suite.
* "Running offline"'s first ``dvc exp run``: it needs a downloaded flan-t5-small at the
  placeholder ``/path/to/flan-t5-small``; its smoke-test variant (random tiny model) runs.
* In "Experiments" every command runs. ``<name>`` in ``dvc exp apply <name>`` is a
  placeholder: ``prompt-lr1`` is put in. The failures that section describes are run too: its
  ``-S train_lora.r=0`` (refused by check_params) and an unreachable model (a model directory
  that does not exist), each followed by its recovery lines.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
import yaml
from e2e_support import E2E_PARAMS, dvc, env, git, make_repo, status
from readme_support import option, section, shell_lines

from pubmedqa_peft.methods import registry

pytestmark = pytest.mark.e2e

PLACEHOLDERS = {"<name>": "prompt-lr1"}
DVC_STAGES = set(yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"])
# What the README shows of the offline model and data, relative to HOME and the project.
OFFLINE_MODEL = ".cache/pubmedqa-peft/models/tiny-t5"
OFFLINE_SOURCE = "../shared/data/pubmedqa/ori_pqal.json"


class User:
    """A shell in the project with the user's HOME; runs README lines as printed."""

    def __init__(self, repo: Path, home: Path) -> None:
        self.repo, self.home = repo, home

    def sh(self, line: str) -> subprocess.CompletedProcess[str]:
        for placeholder, value in PLACEHOLDERS.items():
            line = line.replace(placeholder, value)
        return subprocess.run(
            ["bash", "-c", line], cwd=self.repo, env={**env(), "HOME": str(self.home)}, capture_output=True, text=True
        )

    def ok(self, line: str) -> str:
        """Run ``line``; it must exit 0. Returns stdout and stderr together."""
        proc = self.sh(line)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"README command failed ({proc.returncode}): {line}\n{out[-6000:]}"
        return out

    def fails(self, line: str) -> str:
        """Run ``line``; it must exit non-zero. Returns stdout and stderr together."""
        proc = self.sh(line)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"expected to fail: {line}\n{out[-3000:]}"
        return out

    def params(self) -> dict:
        return yaml.safe_load((self.repo / "params.yaml").read_text())

    def git_changes(self) -> str:
        """Tracked files git sees changed (untracked ones left out: a clone has data/**/.gitignore)."""
        return git(self.repo, "status", "--porcelain", "--untracked-files=no")


def _sets(line: str) -> dict[str, object]:
    """The ``-S key=value`` params of a ``dvc exp run`` line, valued as YAML reads them."""
    args = shlex.split(line, comments=True)
    return {k: yaml.safe_load(v) for a, b in pairwise(args) if a == "-S" for k, v in [b.split("=", 1)]}


def _param(params: dict, dotted: str) -> object:
    for key in dotted.split("."):
        params = params[key]
    return params


def _stages_run(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def _digest(path: Path) -> str:
    """One hash of a file or of every file under a directory (names and contents)."""
    h = hashlib.sha256()
    for f in sorted([path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]):
        h.update(f.relative_to(path.parent).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _failed_stage(out: str) -> str:
    failed = re.search(r"failed to reproduce '([^']+)'", out)
    assert failed, out[-2000:]
    return failed.group(1)


def _cells(line: str, sep: str) -> list[str]:
    """The cells of a table row: ``|``-separated (Markdown) or 2+ spaces (DVC's plain tables)."""
    parts = line.strip().strip("|").split("|") if sep == "|" else re.split(r"\s{2,}", line.strip())
    return [c.strip() for c in parts]


def _experiment_name(cell: str) -> str:
    """``├── 3053e63 [prompt-lr1]`` -> ``prompt-lr1``; ``main`` -> ``main``."""
    named = re.search(r"\[([^\]]+)\]", cell)
    return named.group(1) if named else cell


def _metrics_diff_rows(out: str, sep: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ``dvc metrics diff`` output (plain or ``--md``)."""
    lines = [line for line in out.splitlines() if line.strip() and not set(line.strip()) <= set("|-: ")]
    start = next(i for i, line in enumerate(lines) if _cells(line, sep)[:2] == ["Path", "Metric"])
    return _cells(lines[start], sep), [_cells(line, sep) for line in lines[start + 1 :]]


def _plot_revisions(html: Path) -> dict[str, set[str]]:
    """Each plot of a ``dvc plots diff`` page (by its title, the file) and the revisions drawn in it."""
    specs = re.findall(r"var spec = (.*?);\n", html.read_text(), re.DOTALL)
    found: dict[str, set[str]] = {}
    for text in specs:
        spec = json.loads(text)
        title = spec.get("title")
        title = title.get("text") if isinstance(title, dict) else title
        found[title] = {v["rev"] for v in spec.get("data", {}).get("values", []) if "rev" in v}
    return found


class Section:
    """The command lines of one README section, taken in order by their leading words."""

    def __init__(self, title: str) -> None:
        self.lines: Iterator[str] = iter(shell_lines(section(title)))

    def take(self, *prefix: str) -> str:
        line = next(self.lines, None)
        assert line is not None, f"README: expected a command `{' '.join(prefix)} ...`, found none"
        assert shlex.split(line, comments=True)[: len(prefix)] == list(prefix), (
            f"README: expected `{' '.join(prefix)} ...` next, found {line!r}"
        )
        return line

    def rest(self) -> list[str]:
        return list(self.lines)


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> User:
    """A fresh copy of the project beside ``shared`` (the real data), HOME in a temporary folder."""
    root = tmp_path_factory.mktemp("readme_user")
    (root / "shared").symlink_to(shared_data.parents[1], target_is_directory=True)
    assert (root / "shared" / "data" / "pubmedqa" / "ori_pqal.json").is_file()
    (root / "home").mkdir()
    return User(make_repo(root / "pubmedqa-peft", E2E_PARAMS), root / "home")


def test_readme_offline_run_then_every_experiments_command_as_printed(user: User) -> None:
    _running_offline(user)
    _experiments(user)


def _running_offline(user: User) -> None:
    offline = shell_lines(section("Running offline"))
    (build,) = [line for line in offline if line.startswith("python -m pubmedqa_peft.random_model tiny-t5 ")]
    (run,) = [line for line in offline if line.startswith("dvc exp run ") and "tiny-t5" in line]

    out = user.ok(build)
    model = user.home / OFFLINE_MODEL
    assert f"wrote {model}: tiny-t5" in out
    assert (model / "config.json").is_file() and (model / "tokenizer_config.json").is_file()

    out = user.ok(run)
    assert _stages_run(out) == DVC_STAGES, out[-3000:]
    assert "Experiment results have been applied to your workspace." in out
    # The values as the shell gave them: an absolute model path (usable by queued runs too)
    # and the data path relative to the project.
    assert user.params()["model"]["name"] == str(model)
    assert user.params()["ingest"]["source"] == OFFLINE_SOURCE
    for produced in ("metrics/eval.json", "reports/summary.md", "plots/figures/cost_benefit.png"):
        assert (user.repo / produced).is_file(), produced
    assert not (user.repo / ".cache").exists()  # the model lives outside the project


def _experiments(user: User) -> None:
    text = section("Experiments")
    readme = Section("Experiments")
    methods = registry.names()

    # --- the baseline commit: afterwards git and DVC agree that nothing changed --------------
    user.ok(readme.take("git", "add"))
    user.ok(readme.take("git", "commit"))
    assert user.git_changes() == "", "the baseline commit left changes behind"
    assert status(user.repo) == {}, "the baseline commit does not match its dvc.lock"

    # --- two experiments ----------------------------------------------------------------------
    line = readme.take("dvc", "exp", "run")
    claimed = re.search(r"#\s*reruns (.+?) only", line)
    assert claimed, f"README no longer says which stages rerun: {line}"
    out = user.ok(line)
    name1, sets1 = option(shlex.split(line, comments=True), "-n"), _sets(line)
    (method1,) = {key.split(".")[0].removeprefix("train_") for key in sets1}  # prompt
    assert f"Ran experiment(s): {name1}" in out
    assert _stages_run(out) == {s.strip() for s in claimed.group(1).split(",")}, out[-3000:]

    line = readme.take("dvc", "exp", "run")
    out = user.ok(line)
    name2, sets2 = option(shlex.split(line, comments=True), "-n"), _sets(line)
    (method2,) = {key.split(".")[0].removeprefix("train_") for key in sets2}  # lora
    assert f"Ran experiment(s): {name2}" in out
    assert _stages_run(out) == {"check_params", f"train_{method2}", "evaluate", "plot"}, out[-3000:]
    # "the next dvc exp run starts from there": the second keeps the first's values.
    assert {k: _param(user.params(), k) for k in {**sets1, **sets2}} == {**sets1, **sets2}

    # --- when an experiment fails -------------------------------------------------------------
    restore = [readme.take("git", "rm"), readme.take("git", "checkout"), readme.take("dvc", "checkout")]
    apply_earlier = readme.take("dvc", "exp", "apply")
    committed_params = git(user.repo, "show", "HEAD:params.yaml")

    def back_to_last_commit() -> None:
        for line in restore:
            user.ok(line)
        assert (user.repo / "params.yaml").read_text() == committed_params
        assert user.git_changes() == ""
        assert status(user.repo) == {}  # adapters and data match the restored dvc.lock

    # A value the schema refuses: check_params stops it, naming the key; nothing else runs.
    refused = "dvc exp run -S train_lora.r=0"
    assert f"`{refused[len('dvc exp run ') :]}`" in " ".join(text.split()), "README no longer shows this failure"
    lora = {p: _digest(user.repo / p) for p in ("models/lora", "metrics/train/lora.json", "plots/train/lora")}
    out = user.fails(refused)
    assert _stages_run(out) == {"check_params"} and _failed_stage(out) == "check_params"
    assert re.search(r"train_lora\.r: .*greater than 0", out), out[-2000:]
    assert {p: _digest(user.repo / p) for p in lora} == lora  # no output deleted or retrained
    assert user.params()["train_lora"]["r"] == 0  # "dvc exp run leaves the failed value"
    back_to_last_commit()
    assert user.params()["train_lora"]["r"] == 8

    # A run that fails later (an unreachable model): DVC has deleted the failed stage's outputs.
    out = user.fails('dvc exp run -S "model.name=$HOME/.cache/pubmedqa-peft/models/no-such-model"')
    assert "model directory not found" in out, out[-2000:]
    failed = user.repo / "models" / _failed_stage(out).removeprefix("train_")
    assert not failed.exists()
    back_to_last_commit()
    assert (failed / "run.json").is_file()

    user.ok(apply_earlier)  # dvc exp apply <name>, with prompt-lr1
    assert {k: _param(user.params(), k) for k in sets1} == sets1
    assert {k: _param(user.params(), k) for k in sets2} != sets2
    assert status(user.repo) == {}

    # --- the readable `dvc exp show`: the README's example has the columns it prints ---------
    out = user.ok(readme.take("dvc", "exp", "show"))
    table = [line for line in out.splitlines() if line.strip() and not set(line.strip()) <= set("─━ ")]
    header = _cells(table[0], "  ")
    shown = {_experiment_name(_cells(row, "  ")[0]) for row in table[1:]}
    example = [line for line in text.splitlines() if line.startswith("| ")]
    assert example and example[0].startswith("| Experiment "), "README: no example output of dvc exp show"
    example_header = _cells(example[0], "|")
    example_rows = {_experiment_name(_cells(row, "|")[0]) for row in example[1:] if not row.startswith("|--")}
    assert header == example_header, f"dvc exp show prints:\n{out}"
    assert shown == example_rows == {"workspace", "main", name1, name2}, f"dvc exp show prints:\n{out}"
    assert header[:2] == ["Experiment", "Created"] and "State" not in header  # nothing was queued
    f1 = [f"{s}.{m}.macro_f1" for s in ("test", "val") for m in methods]
    assert header[2 : 2 + len(f1)] == f1
    assert header[2 + len(f1) :] == [*sets1, *sets2]  # of the params, only those the experiments set

    # --- experiments compare like commits ------------------------------------------------------
    # metrics diff main prompt-lr1: every metric that moved, old / new / change; a train_prompt
    # change leaves the other methods' quality metrics alone (latency and throughput move).
    line = readme.take("dvc", "metrics", "diff")
    assert shlex.split(line, comments=True)[3:] == ["main", name1]
    header, rows = _metrics_diff_rows(user.ok(line), "  ")
    assert header == ["Path", "Metric", "main", name1, "Change"]
    assert {r[0] for r in rows} == {"metrics/eval.json", f"metrics/train/{method1}.json"}
    moved = {r[1]: r for r in rows}
    assert float(moved["final_train_loss"][2]) != float(moved["final_train_loss"][3])
    for path, metric, old, new, _change in rows:
        if not metric.startswith("provenance.git_revision"):
            assert _is_number(old) and _is_number(new), (metric, old, new)  # numbers on both sides
        if path == "metrics/eval.json" and not metric.startswith(
            ("provenance.", f"val.{method1}.", f"test.{method1}.")
        ):
            assert re.search(r"\.(latency_s\.\w+|throughput_eps)$", metric), metric
    assert not [m for m in moved if m.startswith(("val.lora.", "val.prefix."))]

    # metrics diff of two experiments (--md): they differ in LoRA only.
    line = readme.take("dvc", "metrics", "diff")
    assert shlex.split(line, comments=True)[3:] == [name1, name2, "--md"]
    header, rows = _metrics_diff_rows(user.ok(line), "|")
    assert header == ["Path", "Metric", name1, name2, "Change"]
    paths = {r[0] for r in rows}
    assert f"metrics/train/{method2}.json" in paths and f"metrics/train/{method1}.json" not in paths
    moved = {r[1]: r for r in rows if r[0] == f"metrics/train/{method2}.json"}
    before, after = float(moved["trainable_params"][2]), float(moved["trainable_params"][3])
    assert 0 < before < after  # a larger LoRA rank

    # plots diff: loss curves, confusion matrices and coverage curves, both revisions in each.
    line = readme.take("dvc", "plots", "diff")
    args = shlex.split(line, comments=True)
    out = user.ok(line)
    page = user.repo / option(args, "-o") / "index.html"
    assert f"{option(args, '-o')}/index.html" in out
    drawn = _plot_revisions(page)
    for m in methods:
        for plot in (f"plots/train/{m}/metrics/train/loss.tsv", f"plots/eval/predictions/{m}.csv"):
            assert drawn.get(plot) == {"main", name1}, plot
    for m in (*methods, "base"):
        assert drawn.get(f"plots/eval/coverage/{m}.csv") == {"main", name1}, m

    line = readme.take("dvc", "exp", "apply")
    user.ok(line)
    assert {k: _param(user.params(), k) for k in sets1} == sets1 and status(user.repo) == {}

    line = readme.take("dvc", "exp", "branch")
    user.ok(line)
    branch = shlex.split(line, comments=True)[4]
    branched = yaml.safe_load(git(user.repo, "show", f"{branch}:params.yaml"))
    assert {k: _param(branched, k) for k in sets1} == sets1

    line = readme.take("dvc", "exp", "remove")
    user.ok(line)
    listed = dvc(user.repo, "exp", "list", "--name-only").stdout.split()
    assert name1 not in listed and name2 in listed

    assert readme.rest() == [], "new commands in the README's Experiments section: add them to this test"
