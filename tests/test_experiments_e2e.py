"""End to end with real ``dvc``: ``exp run -S``, a queued sweep and the best-experiment command.

Each test works in a clone of the finished tiny-model pipeline that shares its DVC cache, so
an experiment reruns only what its params reach (``train_prompt``, ``evaluate``, ``plot``).
Queued experiments run in a temporary copy of the git HEAD: that they succeed shows that
everything the pipeline needs is tracked by git.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from e2e_support import dvc, run
from readme_support import commands_starting, option

from pubmedqa_peft.methods import registry

pytestmark = pytest.mark.e2e

METHODS = registry.names()
# Methods not retrained by a train_prompt change; their quality metrics must not move.
UNTOUCHED = re.compile(
    rf"^(val|test)\.(base|{'|'.join(m for m in METHODS if m != 'prompt')}|majority|tfidf_logreg)"
    r"\.(accuracy|macro_f1|roc_auc|ece)$"
)
# The README's readable `dvc exp show`, read from it (run with --csv, so columns can be checked).
_EXP_SHOW = commands_starting("dvc", "exp", "show", "--only-changed")[0]
EXP_SHOW_KEEP = option(_EXP_SHOW, "--keep")
EXP_SHOW_DROP = option(_EXP_SHOW, "--drop")
QUEUE_TIMEOUT_S = 900


def _metrics_diff(repo: Path, a: str, b: str) -> dict:
    return json.loads(dvc(repo, "metrics", "diff", a, b, "--json").stdout)


def _best(repo: Path, *args: str) -> str:
    return run(repo, sys.executable, "-m", "pubmedqa_peft.experiments", "best", *args).stdout


def _wait_for_queue(repo: Path, names: list[str]) -> dict[str, str]:
    """Poll ``dvc queue status`` until none of ``names`` is queued or running; their final states."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while True:
        rows = [line.split() for line in dvc(repo, "queue", "status").stdout.splitlines()]
        states = {r[1]: r[-1] for r in rows if len(r) >= 4 and r[1] in names}
        if len(states) == len(names) and not {"Queued", "Running"} & set(states.values()):
            return states
        if time.monotonic() > deadline:
            dvc(repo, "queue", "stop", "--kill", check=False)
            raise AssertionError(f"queue not done after {QUEUE_TIMEOUT_S} s: {states}")
        time.sleep(2)


def test_exp_run_set_param_makes_an_experiment_that_metrics_diff_shows(clone):
    out = dvc(clone, "exp", "run", "-S", "train_prompt.lr=1.0", "-n", "prompt-lr1").stdout
    assert "Running stage 'train_prompt'" in out and "Running stage 'evaluate'" in out
    for stage in ("split", "train_prefix", "train_lora"):
        assert f"Running stage '{stage}'" not in out

    diff = _metrics_diff(clone, "HEAD", "prompt-lr1")
    loss = diff["metrics/train/prompt.json"]["final_train_loss"]
    assert loss["old"] != loss["new"]
    evaluated = diff["metrics/eval.json"]
    assert any(k.startswith("val.prompt.") for k in evaluated)  # the retrained method's numbers moved
    assert not [k for k in evaluated if UNTOUCHED.match(k)]  # the others' did not

    # The README's readable view: key metrics side by side, only the param that changed.
    csv = dvc(
        clone, "exp", "show", "--csv", "--only-changed", "--keep", EXP_SHOW_KEEP, "--drop", EXP_SHOW_DROP,
        "--sort-by", "val.prompt.macro_f1", "--sort-order", "desc",
    ).stdout.splitlines()  # fmt: skip
    header = csv[0].split(",")
    assert header[:2] == ["Experiment", "Created"]
    assert sorted(header[2:-1]) == sorted(f"{s}.{m}.macro_f1" for s in ("val", "test") for m in METHODS)
    assert header[-1] == "train_prompt.lr"
    rows = {row.split(",")[0]: row.split(",") for row in csv[1:]}
    assert float(rows["prompt-lr1"][-1]) == 1.0


def test_queued_sweep_runs_and_the_best_command_names_one_of_it(clone, tmp_path):
    out = dvc(clone, "exp", "run", "--queue", "-S", "train_prompt.lr=0.1,1.0").stdout
    names = re.findall(r"Queued experiment '([^']+)'", out)
    assert len(names) == 2, out
    dvc(clone, "queue", "start", "-j", "1")
    states = _wait_for_queue(clone, names)
    if set(states.values()) != {"Success"}:
        logs = "\n".join(dvc(clone, "queue", "logs", n, check=False).stdout[-3000:] for n in names)
        raise AssertionError(f"queued experiments did not all succeed: {states}\n{logs}")

    answer = json.loads(_best(clone, "--json"))
    assert answer["experiment"] in names
    lr = answer["changed_params"]["train_prompt.lr"]
    assert lr["baseline"] == 0.3 and lr["experiment"] in (0.1, 1.0)
    assert answer["skipped"] == {} and answer["candidates"] == 2
    # The score is what `dvc exp show` lists for that experiment.
    shown = json.loads(dvc(clone, "exp", "show", "--json").stdout)
    (entry,) = [
        e["revs"][-1] for row in shown for e in row.get("experiments") or [] if e["name"] == answer["experiment"]
    ]
    val = entry["data"]["metrics"]["metrics/eval.json"]["data"]["val"]
    assert answer["value"] == max(val[m]["macro_f1"] for m in METHODS)
    text = _best(clone)
    assert f": {answer['experiment']}\n" in text and f"train_prompt.lr: 0.3 -> {lr['experiment']}" in text

    # Two experiments compare like two commits.
    diff = _metrics_diff(clone, *names)
    assert diff["metrics/train/prompt.json"]["final_train_loss"]["diff"] != 0
    html = tmp_path / "plots-diff"
    dvc(clone, "plots", "diff", *names, "-o", str(html))
    page = (html / "index.html").read_text()
    assert all(n in page for n in names)
