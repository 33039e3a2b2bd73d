"""Which DVC experiment is best: ``python -m pubmedqa_peft.experiments best``.

After a sweep (``dvc exp run --queue -S ...`` then ``dvc queue start``) this command reads
``dvc exp show --json`` and prints the experiment with the highest validation score, the
score, which method and metric key gave it, and the params it changed against its baseline
commit. Run it from the project root::

    python -m pubmedqa_peft.experiments best                              # default score, see below
    python -m pubmedqa_peft.experiments best --metric val.lora.macro_f1   # one method's sweep
    python -m pubmedqa_peft.experiments best --json                       # machine-readable

The default score of an experiment is its best validation macro-F1 over the trained
methods (``val.<method>.macro_f1`` in ``metrics/eval.json`` for prompt, prefix and LoRA),
naming the method; ``--metric`` picks any numeric key of ``metrics/eval.json`` instead
(higher is better). Validation, never test: the test split stays the final, untouched check.

Only finished experiments compete. Queued, running and failed ones are counted and
skipped: their ``exp show`` entries carry the baseline's git-tracked metrics files, which
would otherwise pass for their own results. The baseline commit itself does not compete
unless ``--include-baseline`` is given; its score is printed for comparison. On a tie the
earliest-created experiment wins and the others are listed as tied.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pubmedqa_peft import paths
from pubmedqa_peft.methods import registry
from pubmedqa_peft.stage import PipelineError

EVAL_FILE = paths.EVAL_METRICS.as_posix()
PARAMS_FILE = paths.PARAMS.as_posix()


def default_metric_label() -> str:
    """What the default score is, for messages: the best val macro-F1 over the registered methods."""
    return f"val macro-F1, best of {', '.join(registry.names())}"


# Executor states of experiments that have no results of their own yet (or never will).
_UNFINISHED = ("queued", "running", "failed")


@dataclass(frozen=True)
class Experiment:
    """One row of ``dvc exp show``: an experiment or a baseline commit.

    Attributes:
        name: Experiment name (``short-colt``), or the baseline's branch/tag name or short rev.
        rev: Full git revision.
        baseline_rev: Revision of the baseline commit (its own rev for a baseline).
        is_baseline: True for a commit row, False for an experiment derived from one.
        created: ISO timestamp of the run, or None.
        params: ``params.yaml`` flattened to dotted keys (``train_prompt.lr``).
        eval_metrics: The ``metrics/eval.json`` document, or None if it has none.
    """

    name: str
    rev: str
    baseline_rev: str
    is_baseline: bool
    created: str | None
    params: dict[str, Any]
    eval_metrics: dict[str, Any] | None


@dataclass(frozen=True)
class Scored:
    """An experiment with its score under the chosen metric."""

    experiment: Experiment
    value: float
    metric: str
    """The ``metrics/eval.json`` key that gave ``value``, e.g. ``val.lora.macro_f1``."""


@dataclass(frozen=True)
class Choice:
    """The answer of :func:`choose_best`."""

    best: Scored
    tied: tuple[Scored, ...]
    baseline: Scored | None
    """The best experiment's baseline commit scored the same way (None if it has no metrics)."""
    baseline_name: str
    changed_params: dict[str, tuple[Any, Any]]
    """``key -> (baseline value, experiment value)`` for every param that differs."""
    candidates: int
    skipped: dict[str, int] = field(default_factory=dict)
    """Why entries did not compete: ``queued``/``running``/``failed``, ``no eval metrics``, ``metric missing``."""
    metric_label: str = field(default_factory=default_metric_label)


def read_exp_show(repo: Path, all_commits: bool = False) -> list[dict[str, Any]]:
    """Run ``dvc exp show --json`` in ``repo`` and return its parsed output.

    Args:
        repo: The project root (a git + DVC repo).
        all_commits: Also list experiments of every commit (``dvc exp show -A``), not only HEAD's.

    Returns:
        The list of rows ``dvc exp show --json`` prints.

    Raises:
        PipelineError: If dvc fails or prints something that is not a JSON list.
    """
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise PipelineError(
            f"`dvc exp show --json` failed in {repo} (exit {proc.returncode}): {' | '.join(detail[-3:])}"
        )
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise PipelineError(f"`dvc exp show --json` printed no valid JSON in {repo}: {err}") from None
    if not isinstance(doc, list):
        raise PipelineError(f"`dvc exp show --json` printed a {type(doc).__name__}, expected a list of rows")
    return doc


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _file_data(section: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The ``data`` of one params/metrics file of an ``exp show`` entry, or None if absent or errored."""
    entry = (section or {}).get(name)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("data"), Mapping):
        return None
    return dict(entry["data"])


def _experiment(entry: Mapping[str, Any], name: str, baseline_rev: str, is_baseline: bool) -> Experiment:
    data = entry.get("data") or {}
    return Experiment(
        name=name,
        rev=entry["rev"],
        baseline_rev=baseline_rev,
        is_baseline=is_baseline,
        created=data.get("timestamp"),
        params=flatten(_file_data(data.get("params"), PARAMS_FILE) or {}),
        eval_metrics=_file_data(data.get("metrics"), EVAL_FILE),
    )


def parse_exp_show(doc: Sequence[Mapping[str, Any]]) -> tuple[list[Experiment], dict[str, Experiment], Counter[str]]:
    """Split ``dvc exp show --json`` output into finished experiments and baseline commits.

    Args:
        doc: The parsed JSON (a list of rows: ``workspace`` first, then baseline commits
            whose ``experiments`` list the runs derived from them).

    Returns:
        ``(experiments, baselines, skipped)``: the finished experiments in listing order,
        the baseline commits by rev, and how many entries were skipped per reason
        (executor state ``queued``/``running``/``failed``). The workspace row is not an
        experiment and is ignored.
    """
    experiments: list[Experiment] = []
    baselines: dict[str, Experiment] = {}
    skipped: Counter[str] = Counter()
    for row in doc:
        if row.get("rev") == "workspace":
            continue
        rev = row["rev"]
        baselines[rev] = _experiment(row, row.get("name") or rev[:7], rev, is_baseline=True)
        for exp_range in row.get("experiments") or []:
            state = (exp_range.get("executor") or {}).get("state")
            if state in _UNFINISHED:
                skipped[state] += 1
                continue
            # One rev per experiment in DVC 3; the last is the final state if there are more.
            entry = exp_range["revs"][-1]
            if entry.get("error"):
                skipped["failed"] += 1
                continue
            experiments.append(_experiment(entry, exp_range.get("name") or entry["rev"][:7], rev, is_baseline=False))
    return experiments, baselines, skipped


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def score(experiment: Experiment, metric: str | None = None) -> Scored | None:
    """Score one experiment.

    Args:
        experiment: The experiment (or baseline commit).
        metric: A dotted numeric key of ``metrics/eval.json`` (``val.lora.macro_f1``), or
            None for the default: the highest ``val.<method>.macro_f1`` over the trained
            methods (the first in registry order on a tie).

    Returns:
        The score, or None if the experiment has no such metric.
    """
    if experiment.eval_metrics is None:
        return None
    flat = flatten(experiment.eval_metrics)
    keys = [metric] if metric else [f"val.{m}.macro_f1" for m in registry.names()]
    found = [(v, k) for k in keys if (v := _number(flat.get(k))) is not None]
    if not found:
        return None
    value, key = max(found, key=lambda vk: vk[0])  # max keeps the first of equal values
    return Scored(experiment, value, key)


def changed_params(baseline: Experiment, experiment: Experiment) -> dict[str, tuple[Any, Any]]:
    """Params whose value differs between a baseline commit and an experiment.

    Returns:
        ``key -> (baseline value, experiment value)``, sorted by key; a key missing on one
        side has None there.
    """
    keys = sorted(set(baseline.params) | set(experiment.params))
    return {
        k: (baseline.params.get(k), experiment.params.get(k))
        for k in keys
        if baseline.params.get(k) != experiment.params.get(k)
    }


def choose_best(doc: Sequence[Mapping[str, Any]], metric: str | None = None, include_baseline: bool = False) -> Choice:
    """Pick the best finished experiment of ``dvc exp show --json`` output.

    Args:
        doc: The parsed ``dvc exp show --json`` output.
        metric: See :func:`score`; None for the default score.
        include_baseline: Let the baseline commits compete too.

    Returns:
        The best experiment with its score, ties, baseline score, changed params and
        the counts of skipped entries.

    Raises:
        PipelineError: If no finished experiment has the metric.
    """
    experiments, baselines, skipped = parse_exp_show(doc)
    pool: Iterable[Experiment] = [*baselines.values(), *experiments] if include_baseline else experiments
    scored: list[Scored] = []
    for exp in pool:
        s = score(exp, metric)
        if s is not None:
            scored.append(s)
        else:
            skipped["no eval metrics" if exp.eval_metrics is None else "metric missing"] += 1
    label = metric or default_metric_label()
    if not scored:
        counts = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "none listed"
        hint = (
            f"no key {metric!r} in {EVAL_FILE}; keys look like val.<method>.macro_f1 or val.<method>.accuracy"
            if metric and skipped.get("metric missing")
            else "run one with `dvc exp run -S key=value`, or start the queue with `dvc queue start` and wait"
        )
        raise PipelineError(f"no finished experiment has a score ({label}); skipped: {counts}. {hint}")
    # Highest score first; on a tie the earliest-created, then the name, so the answer is stable.
    scored.sort(key=lambda s: (-s.value, s.experiment.created or "~", s.experiment.name))
    best = scored[0]
    tied = tuple(s for s in scored[1:] if s.value == best.value)
    base = baselines[best.experiment.baseline_rev]
    return Choice(
        best=best,
        tied=tied,
        baseline=score(base, metric),
        baseline_name=base.name,
        changed_params=changed_params(base, best.experiment),
        candidates=len(scored),
        skipped=dict(sorted(skipped.items())),
        metric_label=label,
    )


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | list | dict) or value is None else str(value)


def format_choice(choice: Choice) -> str:
    """The human-readable answer printed by ``best``."""
    best, exp = choice.best, choice.best.experiment
    kind = "baseline commit" if exp.is_baseline else "experiment"
    lines = [
        f"best {kind} by {choice.metric_label}: {exp.name}",
        f"  score            {best.value:.4f}  ({best.metric} in {EVAL_FILE})",
        f"  rev              {exp.rev[:7]}" + (f", created {exp.created}" if exp.created else ""),
    ]
    if choice.baseline is not None:
        lines.append(
            f"  baseline         {choice.baseline_name}: {choice.baseline.value:.4f} ({choice.baseline.metric})"
        )
    if choice.tied:
        lines.append(f"  tied with        {', '.join(s.experiment.name for s in choice.tied)}")
    lines.append(f"  compared         {choice.candidates} scored")
    if choice.skipped:
        lines[-1] += "; skipped " + ", ".join(f"{n} {why}" for why, n in choice.skipped.items())
    if choice.changed_params:
        lines.append(f"  changed params (vs {choice.baseline_name}):")
        lines += [f"    {k}: {_show(old)} -> {_show(new)}" for k, (old, new) in choice.changed_params.items()]
    else:
        lines.append(f"  changed params   none (same params as {choice.baseline_name})")
    if not exp.is_baseline:
        lines.append(f"  use it           dvc exp apply {exp.name}   (or: dvc exp branch {exp.name} <new-branch>)")
    return "\n".join(lines)


def choice_json(choice: Choice) -> dict[str, Any]:
    """The answer as a JSON-serialisable dict (``best --json``)."""
    exp = choice.best.experiment
    return {
        "experiment": exp.name,
        "rev": exp.rev,
        "is_baseline": exp.is_baseline,
        "created": exp.created,
        "metric": choice.best.metric,
        "metric_label": choice.metric_label,
        "value": choice.best.value,
        "baseline": choice.baseline_name,
        "baseline_value": choice.baseline.value if choice.baseline else None,
        "tied": [s.experiment.name for s in choice.tied],
        "changed_params": {k: {"baseline": old, "experiment": new} for k, (old, new) in choice.changed_params.items()},
        "params": exp.params,
        "candidates": choice.candidates,
        "skipped": choice.skipped,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m pubmedqa_peft.experiments best [--metric KEY] [--json] ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m pubmedqa_peft.experiments",
        description="Report on the DVC experiments of this project (run from the project root).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    best = sub.add_parser(
        "best",
        help="print the best finished experiment by a validation metric, with its changed params",
        description=(
            "Print the best finished experiment of `dvc exp show` by a validation metric. "
            f"Default score: {default_metric_label()} (val.<method>.macro_f1 in {EVAL_FILE})."
        ),
    )
    best.add_argument(
        "--metric",
        default=None,
        help=f"dotted numeric key of {EVAL_FILE}, higher is better (e.g. val.lora.macro_f1, val.prompt.accuracy)",
    )
    best.add_argument("--all-commits", action="store_true", help="consider experiments of all commits (exp show -A)")
    best.add_argument("--include-baseline", action="store_true", help="let the baseline commit(s) compete too")
    best.add_argument("--json", action="store_true", help="print the answer as JSON (all params included)")
    args = parser.parse_args(argv)
    try:
        choice = choose_best(read_exp_show(Path.cwd(), args.all_commits), args.metric, args.include_baseline)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(choice_json(choice), indent=2) if args.json else format_choice(choice))


if __name__ == "__main__":
    main()
