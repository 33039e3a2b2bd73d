"""Hyperparameter search with Optuna, one DVC experiment per trial: ``python -m pubmedqa_peft.tune``.

Run from the project root, after the pipeline ran once and was committed::

    python -m pubmedqa_peft.tune --method lora --trials 20

Optuna's TPE sampler proposes values for the keys of ``tune.space.<method>`` in
``params.yaml``; each trial is a real DVC experiment, ``dvc exp run -n <study>-<trial>
-S ++key=value ... evaluate``, scored by ``val.<method>.<tune.objective>`` of its
``metrics/eval.json`` (validation, never test). Each trial therefore shows in ``dvc exp
show``, its artifacts are in the DVC cache, and the best one can be applied (``dvc exp
apply``) or branched (``dvc exp branch``). At the end the best trial is printed with the
commands that reproduce it.

Design choices, and why:

* **Each worker runs its trials in its own clone** (a ``git clone`` of this repo's HEAD in
  a temporary directory, sharing this repo's DVC cache), and pushes each finished
  experiment back here with ``dvc exp push --no-cache origin <name>``. ``dvc exp run`` in
  the workspace leaves the workspace with the trial's params (that is how it works), so
  it would change the user's files and allow one worker only. ``dvc exp run --temp`` keeps
  the workspace clean but still takes this repo's lock while it sets up and collects the
  experiment, and concurrent temp runs race (DVC issues 5718, 8628, 10673; see the
  project's TRAPS notes on ``queue start -j``). A clone per worker is also exactly what a
  second machine does, so one code path serves both. Uncommitted changes are not part of
  any trial (as with ``dvc exp run --queue``): commit first.
* **Only up to ``evaluate``**: the objective is in ``metrics/eval.json``; the ``plot``
  stage adds figures, not numbers. An applied trial's ``plot`` stage is therefore stale
  until ``dvc repro`` (or reproduce it with the printed ``dvc exp run`` command).
* **Values are set with ``-S ++key=value``** (Hydra's add-or-override): a search key may be
  absent from ``params.yaml`` (``train_lora.weight_decay`` defaults to ``train.weight_decay``),
  and a plain ``-S key=value`` fails for an absent key.
* **The study lives in a database** (``--storage`` > ``PUBMEDQA_TUNE_STORAGE`` >
  ``tune.storage``; default ``sqlite:///.tune/optuna.db``). ``load_if_exists``: re-running
  resumes. Several workers (processes or machines) pointed at one database share one
  study; SQLite serves processes of one machine, PostgreSQL many machines. A URL holding a
  password belongs in the environment variable, never in ``params.yaml`` (which is
  committed); it is never printed.
* **``--trials N`` is a total**: a worker runs until the study holds N complete trials,
  and starts no trial while complete + running ones already reach N (it waits for the
  running ones instead, so a dead worker's trial is still redone). Two workers that check
  at the same instant can overshoot by one trial each; no trial is run twice.
* **Killed workers**: every running trial beats a heartbeat in the database; a trial whose
  heartbeat stops for ``2 x --heartbeat`` seconds is failed by the next worker that looks
  and re-enqueued (up to twice) with the same params (Optuna's
  ``RetryHeartbeatStaleTrialCallback``); a retry is a new trial number, hence a new
  experiment name.
* **A failing trial** (``dvc exp run`` exits non-zero, or the metric is missing) is recorded
  as FAIL with its message (user attribute ``error``), and the worker goes on; after
  ``--max-failures`` failures in a row it stops with an error (a broken pipeline would
  otherwise fail forever).
* **Seeding**: the sampler is re-seeded per trial with ``tune.seed + trial number``: one
  worker replays the same search, and parallel workers do not propose identical values
  (a sampler seeded once per worker would give every worker the same sequence).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pubmedqa_peft import paths
from pubmedqa_peft.config import ConfigError, SearchRange, TuneConfig, load_params
from pubmedqa_peft.methods import registry
from pubmedqa_peft.redaction import redact_secrets, redact_url
from pubmedqa_peft.stage import PipelineError, one_line, setup_logging

log = logging.getLogger("pubmedqa_peft.tune")

ENV_STORAGE = "PUBMEDQA_TUNE_STORAGE"
"""Environment variable with the storage URL (the place for a URL with a password)."""
STAGE = "evaluate"
"""The last stage a trial runs: the one that writes the objective."""
HEARTBEAT_S = 60
"""Default seconds between a running trial's heartbeats; stale after twice that."""
MAX_RETRY = 2
"""How often a trial whose worker died is re-enqueued."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class TrialFailed(Exception):
    """A trial's experiment failed or gave no objective; Optuna records the trial as FAIL."""


# --- pure parts: storage, search space, commands ------------------------------------------


def resolve_storage(cli: str | None, environ: Mapping[str, str], tune: TuneConfig) -> tuple[str, str]:
    """The storage URL and where it came from: ``--storage`` > environment > ``tune.storage``.

    Returns:
        ``(url, origin)``, origin being ``--storage``, the variable's name or ``params.yaml tune.storage``.
    """
    if cli:
        return cli, "--storage"
    if environ.get(ENV_STORAGE):
        return environ[ENV_STORAGE], ENV_STORAGE
    return tune.storage, "params.yaml tune.storage"


def prepare_storage_dir(url: str) -> None:
    """Create the directory of a SQLite database file (``sqlite:///.tune/optuna.db`` -> ``.tune/``)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def method_space(tune: TuneConfig, method: str) -> dict[str, SearchRange]:
    """The search space of one method.

    Raises:
        PipelineError: For an unknown method, or one without ``tune.space.<method>``.
    """
    if method not in registry.names():
        raise PipelineError(f"unknown method {method!r}; allowed: {', '.join(registry.names())}")
    space = tune.space.get(method)
    if not space:
        listed = ", ".join(sorted(tune.space)) or "none"
        raise PipelineError(
            f"params.yaml: tune.space has no search space for {method!r} (methods with one: {listed}); "
            f"add tune.space.{method} with at least one key, "
            f"e.g. train_{method}.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}"
        )
    return space


def suggest(trial: Any, space: Mapping[str, SearchRange]) -> dict[str, Any]:
    """Ask ``trial`` for one value per key of ``space``.

    ``choices`` -> ``suggest_categorical``; an ``integer`` range -> ``suggest_int``; other
    ranges -> ``suggest_float``; ``log`` gives a log-uniform draw.

    Returns:
        ``params.yaml key -> value``, in the space's order.
    """
    values: dict[str, Any] = {}
    for key, rng in space.items():
        if rng.choices is not None:
            values[key] = trial.suggest_categorical(key, list(rng.choices))
        elif rng.integer:
            values[key] = trial.suggest_int(key, int(rng.low), int(rng.high), log=rng.log)
        else:
            values[key] = trial.suggest_float(key, float(rng.low), float(rng.high), log=rng.log)
    return values


def override_value(value: Any) -> str:
    """A value as ``dvc exp run -S`` (Hydra's override grammar) reads it back unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # the shortest text that reads back as the same float
    # Hydra's quoted strings escape backslashes only where they precede a quote (or the closing one).
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value)).replace("'", "\\'")
    return f"'{text}'"  # quoted: `yes` stays a string, a comma is not a sweep


def set_args(values: Mapping[str, Any]) -> list[str]:
    """``-S ++key=value`` per value; ``++`` adds a key absent from ``params.yaml`` or overrides it."""
    args: list[str] = []
    for key, value in values.items():
        args += ["-S", f"++{key}={override_value(value)}"]
    return args


def objective_key(method: str, tune: TuneConfig) -> str:
    """The dotted key of ``metrics/eval.json`` a study of ``method`` optimises."""
    return f"val.{method}.{tune.objective}"


def read_objective(eval_json: Path, key: str) -> float:
    """The value of dotted ``key`` in ``metrics/eval.json``.

    Raises:
        TrialFailed: If the file or key is missing or the value is not a finite number.
    """
    try:
        node: Any = json.loads(eval_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrialFailed(f"{eval_json.name}: unreadable after the run: {err}") from None
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        raise TrialFailed(f"{paths.EVAL_METRICS.as_posix()}: {key} is {node!r}, not a number")
    return float(node)


def experiment_name(study: str, number: int) -> str:
    """The DVC experiment name of a trial: ``<study>-<trial number>``."""
    return f"{study}-{number}"


def reproduce_commands(exp_name: str, values: Mapping[str, Any]) -> list[str]:
    """The shell commands that bring back a trial: apply its experiment, or rerun it from its params."""
    rerun = shlex.join(["dvc", "exp", "run", *set_args(values)])
    return [f"dvc exp apply {shlex.quote(exp_name)}", rerun]


def format_best(study: Any, key: str) -> str:
    """The closing report: the best trial, the study's counts and the reproducing commands."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    best = study.best_trial
    name = best.user_attrs.get("dvc_exp", experiment_name(study.study_name, best.number))
    tally = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    lines = [
        f"study {study.study_name}: {tally}",
        f"best trial {best.number}: {key} = {best.value:.6g} ({study.direction.name.lower()}d), experiment {name}",
        *(f"  {k} = {v!r}" for k, v in best.params.items()),
        "reproduce:",
        *(f"  {cmd}" for cmd in reproduce_commands(name, best.params)),
    ]
    return "\n".join(lines)


def first_error_line(output: str) -> str:
    """The line of a failed command's output that says what went wrong (DVC's ``ERROR:`` or a stage's ``error:``)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error: stage"):
            return line
    for line in lines:
        if line.startswith("ERROR:"):
            return line
    return " | ".join(lines[-3:]) or "no output"


# --- the worker's clone ---------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ENV_STORAGE, None)  # the trial's stages have no business with the study's password
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _run(cmd: Sequence[str], cwd: Path, what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PipelineError(f"{what} failed (exit {proc.returncode}): {first_error_line(proc.stdout + proc.stderr)}")
    return proc.stdout


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


@dataclass
class Clone:
    """A worker's own clone of the project's HEAD, sharing the project's DVC cache."""

    project: Path
    path: Path
    baseline: str

    @staticmethod
    def head(project: Path) -> str:
        """The commit trials start from: ``project``'s HEAD.

        Raises:
            PipelineError: If ``project`` is not a git repo with a commit.
        """
        try:
            return _run(["git", "rev-parse", "--verify", "HEAD^{commit}"], project, "git rev-parse HEAD").strip()
        except (PipelineError, FileNotFoundError):
            raise PipelineError(
                f"{project}: not a git repo with a commit; run from the project root after committing"
            ) from None

    @classmethod
    def create(cls, project: Path) -> Clone:
        """Clone ``project``'s HEAD into a fresh temporary directory and check its outputs out of the cache.

        Raises:
            PipelineError: If ``project`` is not a git repo with a commit, or cloning fails.
        """
        head = cls.head(project)
        if _run(["git", "status", "--porcelain", "--untracked-files=no"], project, "git status").strip():
            log.warning("uncommitted changes to tracked files are not part of any trial (trials start from HEAD)")
        cache = _run(_dvc("cache", "dir"), project, "dvc cache dir").strip()
        path = Path(tempfile.mkdtemp(prefix="pubmedqa-tune-")) / "repo"
        _run(["git", "clone", "-q", "--no-checkout", str(project), str(path)], project, "git clone")
        clone = cls(project=project, path=path, baseline=head)
        log.info("worker clone: %s", path)
        _run(["git", "checkout", "-q", "-B", "tune-worker", head], path, "git checkout")
        _run(_dvc("cache", "dir", "--local", str(Path(cache).resolve())), path, "dvc cache dir --local")
        # Outputs of the unchanged stages, so a trial reruns only what its params reach.
        proc = subprocess.run(_dvc("checkout", "-q"), cwd=path, env=_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            log.warning("dvc checkout in the worker clone: %s", first_error_line(proc.stdout + proc.stderr))
        return clone

    def reset(self) -> None:
        """Back to the baseline commit: the last trial's params and lock changes undone (outputs stay)."""
        _run(["git", "reset", "-q", "--hard", self.baseline], self.path, "git reset")

    def remove(self) -> None:
        """Delete the clone (its experiments were pushed to the project)."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


_CHILD: subprocess.Popen[str] | None = None
"""The running ``dvc exp run``, ended with this worker on SIGTERM."""


def run_experiment(clone: Clone, name: str, values: Mapping[str, Any], eval_key: str) -> float:
    """Run one trial as a DVC experiment in ``clone``, push it to the project, return its objective.

    Raises:
        TrialFailed: If the run or the push fails, or the objective is missing.
    """
    global _CHILD
    clone.reset()
    cmd = _dvc("exp", "run", "-n", name, *set_args(values), STAGE)
    log.info("%s: %s", name, shlex.join(["dvc", *cmd[3:]]))
    logfile = clone.path.parent / f"{name}.log"
    with logfile.open("w+", encoding="utf-8") as out:
        _CHILD = subprocess.Popen(cmd, cwd=clone.path, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            rc = _CHILD.wait()
        finally:
            _CHILD = None
        out.seek(0)
        output = out.read()
    if rc != 0:
        raise TrialFailed(f"dvc exp run exited {rc}: {first_error_line(output)}")
    value = read_objective(clone.path / paths.EVAL_METRICS, eval_key)
    push = subprocess.run(
        _dvc("exp", "push", "--no-cache", "origin", name), cwd=clone.path, env=_env(), capture_output=True, text=True
    )
    if push.returncode != 0:
        raise TrialFailed(
            f"dvc exp push of {name} to the project failed: {first_error_line(push.stdout + push.stderr)} "
            "(an experiment of that name exists already? remove it with `dvc exp remove` or pick another --study)"
        )
    return value


# --- the study ---------------------------------------------------------------------------------


def open_storage(url: str, heartbeat_s: int) -> Any:
    """An Optuna RDB storage with heartbeats, which re-enqueues a dead worker's trial.

    Raises:
        PipelineError: If the database cannot be reached or opened (the message hides the URL's secrets).
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes write one file: wait for its lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            prepare_storage_dir(url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_s,
                    grace_period=2 * heartbeat_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
        except (IntegrityError, ProgrammingError, OperationalError) as err:
            # Workers started together on an empty database all create Optuna's tables; all but
            # one then find them half made (PostgreSQL: "duplicate key ... pg_type"; SQLite:
            # "table studies already exists"): wait and look again.
            schema_race = not isinstance(err, OperationalError) or "already exists" in str(err)
            if not schema_race or attempt + 1 == _SCHEMA_ATTEMPTS:
                raise PipelineError(f"cannot open the study's storage {redact_url(url)}: {_reason(err, url)}") from None
            time.sleep(1 + attempt)
        except Exception as err:  # SQLAlchemy's and the drivers' errors have no common base worth naming
            raise PipelineError(f"cannot open the study's storage {redact_url(url)}: {_reason(err, url)}") from None
    raise AssertionError("unreachable")


_SCHEMA_ATTEMPTS = 5


def _reason(err: BaseException, url: str) -> str:
    """A database error on one line, without SQLAlchemy's link footer or the URL's secrets."""
    return redact_secrets(one_line(str(err).split("\n(Background")[0]), url)


def _reseeding_sampler(seed: int) -> Any:
    """A TPE sampler re-seeded per trial with ``seed + trial number`` (see the module docstring)."""
    from optuna.samplers import TPESampler

    class TrialSeededTPE(TPESampler):
        def before_trial(self, study: Any, trial: Any) -> None:
            s = (seed + trial.number) % 2**32
            self._rng.rng.seed(s)
            self._random_sampler._rng.rng.seed(s)
            super().before_trial(study, trial)

    return TrialSeededTPE(seed=seed)


@dataclass
class Search:
    """One worker's search: what to tune, against which study, until how many complete trials."""

    method: str
    space: Mapping[str, SearchRange]
    eval_key: str
    trials: int
    max_failures: int
    poll_s: float


def _counts(study: Any) -> tuple[int, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return complete, len(trials) - complete


def work(study: Any, search: Search, clone_factory: Any) -> None:
    """Run trials until the study holds ``search.trials`` complete ones.

    Raises:
        PipelineError: After ``search.max_failures`` failed trials in a row.
    """
    import optuna

    worker = f"{socket.gethostname()}-{os.getpid()}"
    failures = 0
    clone: Clone | None = None  # made for the first trial: a worker with nothing left to do copies nothing

    def objective(trial: optuna.Trial) -> float:
        nonlocal clone
        values = suggest(trial, search.space)
        name = experiment_name(study.study_name, trial.number)
        trial.set_user_attr("dvc_exp", name)
        trial.set_user_attr("worker", worker)
        try:
            if clone is None:
                clone = clone_factory()
            value = run_experiment(clone, name, values, search.eval_key)
        except (TrialFailed, PipelineError) as err:
            trial.set_user_attr("error", str(err))
            raise TrialFailed(str(err)) from None
        log.info("%s: %s = %.6g", name, search.eval_key, value)
        return value

    try:
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            complete, running = _counts(study)
            if complete >= search.trials:
                return
            if complete + running >= search.trials:
                time.sleep(search.poll_s)  # the running ones may finish it, or die and be retried here
                continue
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker]
            if mine and mine[-1].state == optuna.trial.TrialState.FAIL:
                failures += 1
                if failures >= search.max_failures:
                    raise PipelineError(
                        f"{failures} trials in a row failed, the last ({mine[-1].number}): "
                        f"{mine[-1].user_attrs.get('error', 'see the log above')}"
                    )
            else:
                failures = 0
    finally:
        if clone is not None:
            clone.remove()


def load_study(url: str, name: str, tune: TuneConfig, eval_key: str, heartbeat_s: int) -> Any:
    """Create or resume the study, checking that it optimises the same metric.

    Raises:
        PipelineError: If the storage is unreachable or the study optimises something else.
    """
    import optuna

    storage = open_storage(url, heartbeat_s)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=_reseeding_sampler(tune.seed),
            direction=tune.direction,
            load_if_exists=True,
        )
    except Exception as err:
        raise PipelineError(f"cannot create or load study {name!r} in {redact_url(url)}: {_reason(err, url)}") from None
    if study.direction.name.lower() != tune.direction:
        raise PipelineError(
            f"study {name!r} is {study.direction.name.lower()}d but tune.objective {tune.objective} is "
            f"{tune.direction}d; use another --study"
        )
    recorded = study.user_attrs.get("objective")
    if recorded is None:
        study.set_user_attr("objective", eval_key)
    elif recorded != eval_key:
        raise PipelineError(
            f"study {name!r} optimises {recorded}, not {eval_key}; use another --study (or the same tune.objective)"
        )
    return study


def _terminate(signum: int, _frame: Any) -> None:
    # A worker told to stop ends its experiment too; the trial is recorded as failed.
    if _CHILD is not None and _CHILD.poll() is None:
        _CHILD.terminate()
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m pubmedqa_peft.tune --method M [--trials N] [--study S] [--storage URL]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pubmedqa_peft.tune",
        description=(
            "Search one method's hyperparameters (params.yaml tune.space.<method>) with Optuna; each trial is a "
            f"DVC experiment run up to `{STAGE}`, scored by val.<method>.<tune.objective> of "
            f"{paths.EVAL_METRICS.as_posix()}. Run from the project root; re-running resumes the study."
        ),
    )
    parser.add_argument("--method", required=True, help=f"the method to tune: {', '.join(registry.names())}")
    parser.add_argument(
        "--trials", type=int, default=20, help="run until the study has this many complete trials in total (20)"
    )
    parser.add_argument("--study", default=None, help="study name (default pubmedqa-<method>); also names experiments")
    parser.add_argument(
        "--storage",
        default=None,
        help=f"Optuna storage URL (default: ${ENV_STORAGE}, else params.yaml tune.storage); "
        "e.g. postgresql+psycopg2://user:pass@host/db to share a study between machines",
    )
    parser.add_argument(
        "--heartbeat", type=int, default=HEARTBEAT_S, help="seconds between heartbeats; a dead worker's trial is "
        f"failed and retried after twice this ({HEARTBEAT_S})"
    )  # fmt: skip
    parser.add_argument(
        "--max-failures", type=int, default=3, help="stop this worker after this many failed trials in a row (3)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.trials < 1 or args.heartbeat < 1 or args.max_failures < 1:
            raise PipelineError("--trials, --heartbeat and --max-failures must be at least 1")
        tune = load_params(paths.PARAMS).tune
        space = method_space(tune, args.method)
        study_name = args.study or f"pubmedqa-{args.method}"
        if not _NAME.match(study_name) or ".." in study_name or study_name.endswith((".lock", ".")):
            raise PipelineError(f"--study {study_name!r}: use letters, digits, '.', '_' and '-' (it names experiments)")
        url, origin = resolve_storage(args.storage, os.environ, tune)
        eval_key = objective_key(args.method, tune)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = load_study(url, study_name, tune, eval_key, args.heartbeat)
        log.info(
            "study %s in %s (from %s): %s %s over %s, until %d complete trials",
            study_name, redact_url(url), origin, tune.direction, eval_key, ", ".join(space), args.trials,
        )  # fmt: skip
        project = Path.cwd()
        Clone.head(project)  # before any trial: a project that cannot be cloned is a one-line error
        search = Search(args.method, space, eval_key, args.trials, args.max_failures, poll_s=min(5.0, args.heartbeat))
        work(study, search, lambda: Clone.create(project))
        print(format_best(study, eval_key))
    except (ConfigError, PipelineError) as err:
        print(f"error: tune: {one_line(str(err)).rstrip('.')}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: tune: interrupted; the running trial is recorded as failed; re-run to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
