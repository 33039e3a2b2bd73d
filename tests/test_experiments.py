"""Unit tests of the best-experiment command on a real ``dvc exp show --json`` output.

tests/fixtures/exp_show.json was printed by ``dvc exp show --json`` in a clone of the
tiny-model pipeline after: ``dvc exp run -S train_prompt.lr=1.0 -n lr1`` (workspace run);
``dvc exp run --queue -S 'train_prompt.lr=0.1,1.0'`` + ``dvc queue start`` (short-colt,
glued-chay); a queued ``-S train_prompt.lr=-1`` that failed (bad-lr); one queued and not
started (later); one running (pending, from a snapshot taken while it ran). It was trimmed
to ``metrics/eval.json``'s val accuracy, macro-F1 and ROC AUC; everything else is as printed.
"""

import copy
import json
from pathlib import Path

import pytest

from pubmedqa_peft import experiments
from pubmedqa_peft.experiments import changed_params, choose_best, flatten, parse_exp_show, score
from pubmedqa_peft.stage import PipelineError

FIXTURE = Path(__file__).parent / "fixtures" / "exp_show.json"
FINISHED = {"lr1", "short-colt", "glued-chay"}


@pytest.fixture
def doc():
    return json.loads(FIXTURE.read_text())


def _entry(doc, name):
    """The exp show entry (the last rev) of the experiment called ``name``."""
    for row in doc:
        for exp_range in row.get("experiments") or []:
            if exp_range["name"] == name:
                return exp_range["revs"][-1]
    raise KeyError(name)


def _set_val(doc, name, method, key, value):
    entry = doc[1] if name == "main" else _entry(doc, name)
    entry["data"]["metrics"]["metrics/eval.json"]["data"]["val"][method][key] = value


def _val(doc, name, method, key):
    return _entry(doc, name)["data"]["metrics"]["metrics/eval.json"]["data"]["val"][method][key]


def test_parse_keeps_only_finished_experiments_and_counts_the_rest(doc):
    exps, baselines, skipped = parse_exp_show(doc)
    assert {e.name for e in exps} == FINISHED
    assert dict(skipped) == {"queued": 1, "running": 1, "failed": 1}
    (base,) = baselines.values()
    assert base.name == "main" and base.is_baseline
    assert all(e.baseline_rev == base.rev and not e.is_baseline for e in exps)
    lr1 = next(e for e in exps if e.name == "lr1")
    assert lr1.params["train_prompt.lr"] == 1.0
    assert lr1.eval_metrics["val"]["lora"]["macro_f1"] == _val(doc, "lr1", "lora", "macro_f1")


def test_unfinished_experiments_never_win_although_they_carry_metrics(doc):
    # Failed and running entries hold the baseline's git-tracked metrics files: a naive reader
    # would take them for results. Give them the best score and check they still lose.
    for name in ("bad-lr", "pending"):
        assert _entry(doc, name)["data"]["metrics"]["metrics/eval.json"]
        _set_val(doc, name, "lora", "macro_f1", 0.99)
    assert choose_best(doc).best.experiment.name in FINISHED


def test_default_score_is_the_best_val_macro_f1_over_the_trained_methods(doc):
    _set_val(doc, "short-colt", "lora", "macro_f1", 0.9)
    choice = choose_best(doc)
    assert choice.best.experiment.name == "short-colt"
    assert choice.best.metric == "val.lora.macro_f1" and choice.best.value == 0.9
    assert choice.changed_params == {"train_prompt.lr": (0.3, 0.1)}
    assert choice.tied == ()
    # The baseline is scored the same way, for comparison, but does not compete.
    base = doc[1]["data"]["metrics"]["metrics/eval.json"]["data"]["val"]
    assert choice.baseline.value == max(base[m]["macro_f1"] for m in ("prompt", "prefix", "lora"))


def test_base_and_baselines_do_not_count_towards_the_default_score(doc):
    # `base` (the frozen model) is not a trained method: a high base score must not win.
    for name in FINISHED:
        _set_val(doc, name, "base", "macro_f1", 0.95)
    assert choose_best(doc).best.metric.split(".")[1] in ("prompt", "prefix", "lora")
    assert choose_best(doc).best.value < 0.95


def test_ties_go_to_the_earliest_experiment_and_are_listed(doc):
    # On the tiny random model every finished run has the same val macro-F1 (all "yes").
    values = {_val(doc, n, m, "macro_f1") for n in FINISHED for m in ("prompt", "lora")}
    assert len(values) == 1
    choice = choose_best(doc)
    created = {n: _entry(doc, n)["data"]["timestamp"] for n in FINISHED}
    assert choice.best.experiment.name == min(created, key=created.get)
    assert {s.experiment.name for s in choice.tied} == FINISHED - {choice.best.experiment.name}
    # Within an experiment, equal methods resolve to the first of prompt, prefix, lora.
    assert choice.best.metric == "val.prompt.macro_f1"


def test_metric_option_ranks_by_that_key(doc):
    choice = choose_best(doc, metric="val.prompt.roc_auc")
    aucs = {n: _val(doc, n, "prompt", "roc_auc") for n in FINISHED}
    assert choice.best.experiment.name == max(aucs, key=aucs.get)
    assert choice.best.value == max(aucs.values())
    assert choice.changed_params["train_prompt.lr"][1] == choice.best.experiment.params["train_prompt.lr"]


def test_include_baseline_lets_the_commit_compete(doc):
    _set_val(doc, "main", "prefix", "macro_f1", 0.97)
    assert choose_best(doc).best.experiment.name in FINISHED
    choice = choose_best(doc, include_baseline=True)
    assert choice.best.experiment.is_baseline and choice.best.experiment.name == "main"
    assert choice.changed_params == {}
    assert "dvc exp apply" not in experiments.format_choice(choice)


def test_unknown_metric_is_a_clear_error(doc):
    with pytest.raises(PipelineError, match=r"no key 'val\.lora\.f1'.*val\.<method>\.macro_f1"):
        choose_best(doc, metric="val.lora.f1")


def test_no_finished_experiment_says_what_was_skipped(doc):
    row = doc[1]
    row["experiments"] = [e for e in row["experiments"] if e["name"] not in FINISHED]
    with pytest.raises(PipelineError, match=r"1 failed, 1 queued, 1 running.*dvc queue start"):
        choose_best(doc)


def test_score_ignores_non_numbers():
    exp = experiments.Experiment("x", "r" * 40, "b" * 40, False, None, {}, {"val": {"prompt": {"macro_f1": None}}})
    assert score(exp) is None
    exp2 = experiments.Experiment("x", "r" * 40, "b" * 40, False, None, {}, {"val": {"lora": {"macro_f1": True}}})
    assert score(exp2) is None


def test_flatten_and_changed_params():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
    mk = lambda params: experiments.Experiment("n", "r", "b", False, None, params, None)  # noqa: E731
    changed = changed_params(mk({"a": 1, "b": [1], "c": 2}), mk({"a": 1, "b": [1, 2], "d": 3}))
    assert changed == {"b": ([1], [1, 2]), "c": (2, None), "d": (None, 3)}


def test_text_and_json_answers_name_the_experiment_score_and_params(doc):
    _set_val(doc, "glued-chay", "prefix", "macro_f1", 0.8)
    choice = choose_best(doc)
    text = experiments.format_choice(choice)
    assert "best experiment by val macro-F1, best of prompt, prefix, lora, ia3, full: glued-chay" in text
    assert "0.8000  (val.prefix.macro_f1 in metrics/eval.json)" in text
    assert "train_prompt.lr: 0.3 -> 1.0" in text
    assert "skipped 1 failed, 1 queued, 1 running" in text
    answer = json.loads(json.dumps(experiments.choice_json(choice)))
    assert answer["experiment"] == "glued-chay" and answer["value"] == 0.8
    assert answer["changed_params"] == {"train_prompt.lr": {"baseline": 0.3, "experiment": 1.0}}
    assert answer["params"]["train_prompt.lr"] == 1.0 and answer["params"]["model.max_source_length"] == 256


def test_main_prints_the_answer_and_exits_1_with_a_message(doc, monkeypatch, capsys):
    monkeypatch.setattr(experiments, "read_exp_show", lambda repo, all_commits=False: copy.deepcopy(doc))
    experiments.main(["best", "--json", "--metric", "val.prompt.roc_auc"])
    assert json.loads(capsys.readouterr().out)["metric"] == "val.prompt.roc_auc"
    with pytest.raises(SystemExit) as exit_info:
        experiments.main(["best", "--metric", "val.nothing"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no finished experiment has a score (val.nothing)") and "Traceback" not in err


def test_read_exp_show_outside_a_repo_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match=r"dvc exp show --json` failed in .*exit"):
        experiments.read_exp_show(tmp_path)
