"""The search's parts without DVC: storage choice, search space, -S arguments, the worker loop, bad inputs."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from dvc.utils.hydra import apply_overrides
from ruamel.yaml import YAML

from pubmedqa_peft import tune
from pubmedqa_peft.config import SearchRange, TuneConfig, parse_params
from pubmedqa_peft.stage import PipelineError

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "train_lora.lr": SearchRange(low=1e-4, high=1e-2, log=True),
    "train_lora.weight_decay": SearchRange(low=0.0, high=0.1),
    "train_lora.r": SearchRange(choices=(4, 8, 16)),
    "train_lora.alpha": SearchRange(low=8, high=64, integer=True, log=True),
    "train_lora.use_dora": SearchRange(choices=(True, False)),
}


def _memory_study(direction: str = "maximize") -> optuna.Study:
    return optuna.create_study(direction=direction, sampler=tune._reseeding_sampler(42))


# --- storage ----------------------------------------------------------------------------------


def test_storage_precedence_is_flag_then_environment_then_params() -> None:
    cfg = TuneConfig(storage="sqlite:///from-params.db")
    env = {tune.ENV_STORAGE: "postgresql://u:p@db/x"}
    assert tune.resolve_storage("sqlite:///flag.db", env, cfg) == ("sqlite:///flag.db", "--storage")
    assert tune.resolve_storage(None, env, cfg) == ("postgresql://u:p@db/x", tune.ENV_STORAGE)
    assert tune.resolve_storage(None, {tune.ENV_STORAGE: ""}, cfg) == (
        "sqlite:///from-params.db",
        "params.yaml tune.storage",
    )
    assert tune.resolve_storage(None, {}, TuneConfig())[0] == "sqlite:///.tune/optuna.db"


def test_sqlite_directory_is_created_and_other_databases_touch_no_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    tune.prepare_storage_dir("sqlite:///.tune/optuna.db")
    assert (tmp_path / ".tune").is_dir()
    tune.prepare_storage_dir(f"sqlite:///{tmp_path}/abs/deeper/x.db")
    assert (tmp_path / "abs" / "deeper").is_dir()
    tune.prepare_storage_dir("postgresql+psycopg2://u:p@127.0.0.1:5432/optuna")
    tune.prepare_storage_dir("sqlite:///:memory:")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tune", "abs"]


def _open_at_once(url: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        tune.open_storage(url, heartbeat_s=2)
        results.put("ok")
    except PipelineError as err:
        results.put(str(err))


def test_workers_opening_an_empty_sqlite_file_at_once_all_get_the_storage(tmp_path: Path) -> None:
    # Workers started together all create Optuna's tables; the losers must wait, not fail
    # (CI once saw "UNIQUE constraint failed: alembic_version.version_num" from such a race).
    ctx = multiprocessing.get_context("fork")
    n, url = 4, f"sqlite:///{tmp_path}/study.db"
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(n)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert outcomes == ["ok"] * n
    assert optuna.get_all_study_summaries(storage=url) == []  # one well-formed, empty database


def test_the_default_study_directory_is_ignored_by_git() -> None:
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert "/.tune/" in ignored


# --- search space -----------------------------------------------------------------------------


def test_each_range_kind_becomes_the_matching_optuna_distribution() -> None:
    study = _memory_study()
    trial = study.ask()
    values = tune.suggest(trial, SPACE)
    assert list(values) == list(SPACE)
    d = trial.distributions
    assert isinstance(d["train_lora.lr"], optuna.distributions.FloatDistribution) and d["train_lora.lr"].log
    assert not d["train_lora.weight_decay"].log
    assert isinstance(d["train_lora.alpha"], optuna.distributions.IntDistribution) and d["train_lora.alpha"].log
    assert d["train_lora.r"].choices == (4, 8, 16)
    assert 1e-4 <= values["train_lora.lr"] <= 1e-2 and 0 <= values["train_lora.weight_decay"] <= 0.1
    # Types survive: a rank stays an int, a flag a bool (params.yaml validation would refuse 8.0 for r).
    assert type(values["train_lora.r"]) is int and type(values["train_lora.alpha"]) is int
    assert type(values["train_lora.use_dora"]) is bool


def test_trials_are_seeded_by_number_so_parallel_workers_do_not_repeat_each_other() -> None:
    first, second = _memory_study(), _memory_study()  # two workers, same tune.seed
    a = [tune.suggest(first.ask(), SPACE) for _ in range(3)]
    b = [tune.suggest(second.ask(), SPACE) for _ in range(3)]
    assert a == b  # the same search replays
    assert len({v["train_lora.lr"] for v in a}) == 3  # but trial 0 and trial 1 differ
    other = optuna.create_study(sampler=tune._reseeding_sampler(7))
    assert tune.suggest(other.ask(), SPACE) != a[0]


def test_unknown_method_or_method_without_space_is_refused() -> None:
    cfg = TuneConfig(space={"lora": {"train_lora.lr": SearchRange(low=1e-4, high=1e-2)}})
    with pytest.raises(PipelineError, match=r"unknown method 'lorra'; allowed: prompt, prefix, lora"):
        tune.method_space(cfg, "lorra")
    with pytest.raises(PipelineError, match=r"tune.space has no search space for 'ia3' \(methods with one: lora\)"):
        tune.method_space(cfg, "ia3")
    assert tune.method_space(cfg, "lora") == cfg.space["lora"]


# --- -S arguments and the reproducing commands -----------------------------------------------


def test_set_arguments_read_back_by_dvc_as_the_same_values(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train_lora:\n  lr: 0.001\n  r: 8\n")
    values = {
        "train_lora.lr": 1.2345678901234568e-05,  # needs every digit, and an exponent
        "train_lora.r": 16,
        "train_lora.weight_decay": 0.0,  # absent from the file: `++` adds it
        "train_lora.use_dora": True,
        "train_lora.target_modules": "q,v",  # a comma would be a sweep unquoted
        "train_prompt.init_text": "it's \\ yes",
        "task.label": "yes",  # a string, not YAML 1.1's boolean
        "x.quote_after_backslash": "a\\'b",
        "x.trailing_backslash": "c\\",
    }
    args = tune.set_args(values)
    assert args[:2] == ["-S", "++train_lora.lr=1.2345678901234568e-05"]
    apply_overrides(params, args[1::2])  # what `dvc exp run -S` does with them
    doc = YAML(typ="safe", pure=True).load(params.read_text())
    assert doc["train_lora"] == {
        "lr": 1.2345678901234568e-05, "r": 16, "weight_decay": 0.0, "use_dora": True, "target_modules": "q,v",
    }  # fmt: skip
    assert doc["train_prompt"]["init_text"] == "it's \\ yes" and doc["task"]["label"] == "yes"
    assert doc["x"] == {"quote_after_backslash": "a\\'b", "trailing_backslash": "c\\"}


def test_reproduce_commands_apply_the_experiment_or_rerun_its_params() -> None:
    cmds = tune.reproduce_commands("pubmedqa-lora-3", {"train_lora.lr": 0.00123, "train_lora.r": 16})
    assert cmds == [
        "dvc exp apply pubmedqa-lora-3",
        "dvc exp run -S ++train_lora.lr=0.00123 -S ++train_lora.r=16",
    ]
    quoted = tune.reproduce_commands("x", {"train_lora.target_modules": "q,v"})[1]
    assert quoted == "dvc exp run -S '++train_lora.target_modules='\"'\"'q,v'\"'\"''"


def test_best_trial_report_names_trial_value_params_and_commands() -> None:
    study = _memory_study()
    dist = {"train_lora.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for number, (lr, value) in enumerate([(0.001, 0.5), (0.004, 0.75), (0.002, 0.6)]):
        study.add_trial(
            optuna.trial.create_trial(
                params={"train_lora.lr": lr}, distributions=dist, value=value,
                user_attrs={"dvc_exp": f"pubmedqa-lora-{number}"},
            )
        )  # fmt: skip
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    text = tune.format_best(study, "val.lora.macro_f1").splitlines()
    assert text[0].endswith(": 3 complete, 1 fail")
    assert text[1] == "best trial 1: val.lora.macro_f1 = 0.75 (maximized), experiment pubmedqa-lora-1"
    assert text[2:] == [
        "  train_lora.lr = 0.004",
        "reproduce:",
        "  dvc exp apply pubmedqa-lora-1",
        "  dvc exp run -S ++train_lora.lr=0.004",
    ]


def test_objective_is_read_from_eval_json_and_a_missing_or_null_value_fails_the_trial(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    path.write_text('{"val": {"lora": {"macro_f1": 0.625, "roc_auc": null}}}')
    assert tune.read_objective(path, "val.lora.macro_f1") == 0.625
    for key, why in (("val.lora.roc_auc", "is None"), ("val.ia3.macro_f1", "is None")):
        with pytest.raises(tune.TrialFailed, match=f"{key} {why}, not a number"):
            tune.read_objective(path, key)
    with pytest.raises(tune.TrialFailed, match="unreadable"):
        tune.read_objective(tmp_path / "absent.json", "val.lora.macro_f1")


def test_the_failing_line_of_dvc_output_is_the_one_kept() -> None:
    out = "Running stage 'train_lora':\n> python -m stages.train lora\nerror: stage train_lora: bad lr\nERROR: failed"
    assert tune.first_error_line(out) == "error: stage train_lora: bad lr"
    assert tune.first_error_line("a\nERROR: failed to reproduce 'x'\nb") == "ERROR: failed to reproduce 'x'"
    assert tune.first_error_line("") == "no output"


# --- the worker loop, with a fake experiment ------------------------------------------------------


class _FakeClone:
    removed = False

    def remove(self) -> None:
        self.removed = True


def _search(trials: int, max_failures: int = 3) -> tune.Search:
    return tune.Search("lora", SPACE, "val.lora.macro_f1", trials, max_failures, poll_s=0.01)


def test_worker_runs_until_the_study_holds_n_complete_trials_and_failures_are_recorded(monkeypatch, tmp_path) -> None:
    calls: list[str] = []

    def fake_run(clone: Any, name: str, values: dict, key: str) -> float:
        calls.append(name)
        if len(calls) == 2:
            raise tune.TrialFailed("dvc exp run exited 1: error: stage train_lora: out of memory")
        return values["train_lora.lr"] * 100

    monkeypatch.setattr(tune, "run_experiment", fake_run)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/o.db", direction="maximize")
    clone = _FakeClone()
    tune.work(study, _search(3), lambda: clone)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[1].user_attrs["error"].endswith("out of memory")
    assert calls == ["s-0", "s-1", "s-2", "s-3"] and clone.removed
    # A rerun with the same N resumes: nothing left to do, no trial run again.
    tune.work(study, _search(3), _FakeClone)
    assert len(calls) == 4 and len(study.trials) == 4


def test_worker_stops_after_max_failures_in_a_row(monkeypatch) -> None:
    def always_fails(*_: Any) -> float:
        raise tune.TrialFailed("dvc exp run exited 1: ERROR: broken")

    monkeypatch.setattr(tune, "run_experiment", always_fails)
    study = _memory_study()
    with pytest.raises(PipelineError, match=r"2 trials in a row failed, the last \(1\): dvc exp run exited 1"):
        tune.work(study, _search(5, max_failures=2), _FakeClone)


def test_study_that_optimises_another_metric_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    cfg = TuneConfig(objective="macro_f1")
    tune.load_study(url, "s", cfg, "val.lora.macro_f1", heartbeat_s=60)
    with pytest.raises(PipelineError, match=r"optimises val\.lora\.macro_f1, not val\.lora\.accuracy"):
        tune.load_study(url, "s", TuneConfig(objective="accuracy"), "val.lora.accuracy", heartbeat_s=60)
    with pytest.raises(PipelineError, match=r"is maximized but tune\.objective ece is minimized"):
        tune.load_study(url, "s", TuneConfig(objective="ece"), "val.lora.ece", heartbeat_s=60)


# --- the command line: bad input is one line, never the password ----------------------------


def _write_params(directory: Path, space: dict) -> None:
    import yaml

    doc = {"tune": {"space": space}}
    parse_params(doc)  # a valid file: the error must come from the command, not from params.yaml
    (directory / "params.yaml").write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--method", "lorra"], "error: tune: unknown method 'lorra'; allowed: prompt, prefix, lora, ia3, full"),
        (["--method", "ia3"], "error: tune: params.yaml: tune.space has no search space for 'ia3'"),
        (["--method", "lora", "--trials", "0"], "error: tune: --trials, --heartbeat and --max-failures must be"),
        (["--method", "lora", "--study", "a b"], "error: tune: --study 'a b': use letters, digits"),
        (
            ["--method", "lora", "--storage", "postgresql+psycopg2://tuner:s3cret@127.0.0.1:1/optuna"],
            "error: tune: cannot open the study's storage postgresql+psycopg2://***@127.0.0.1:1/optuna: ",
        ),
        (["--method", "lora", "--storage", "nosuchdb://x/y"], "error: tune: cannot open the study's storage nosuchdb"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(argv, expected, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _write_params(tmp_path, {"lora": {"train_lora.lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    with pytest.raises(SystemExit) as exit_info:
        tune.main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(expected), err
    assert "s3cret" not in "\n".join(err) and "Traceback" not in "\n".join(err)
    assert not (tmp_path / ".tune").exists()  # nothing created for a bad input


def test_a_password_in_the_environment_is_used_but_never_shown(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _write_params(tmp_path, {"lora": {"train_lora.lr": {"low": 1e-4, "high": 1e-2}}})
    monkeypatch.setenv(tune.ENV_STORAGE, "postgresql+psycopg2://tuner:s3cret@127.0.0.1:1/optuna?sslpassword=x9")
    with pytest.raises(SystemExit):
        tune.main(["--method", "lora"])
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err and "s3cret" not in err and "x9" not in err
    # The trials' own processes never see the study's URL.
    assert tune.ENV_STORAGE not in tune._env() and os.environ[tune.ENV_STORAGE]


def test_not_a_git_repo_stops_before_any_trial(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _write_params(tmp_path, {"lora": {"train_lora.lr": {"low": 1e-4, "high": 1e-2}}})
    with pytest.raises(SystemExit):
        tune.main(["--method", "lora", "--trials", "1", "--storage", f"sqlite:///{tmp_path}/o.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: tune: ") and "not a git repo with a commit" in err[-1]
    study = optuna.load_study(study_name="pubmedqa-lora", storage=f"sqlite:///{tmp_path}/o.db")
    assert study.trials == []
