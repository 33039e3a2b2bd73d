"""The Predictor: the same numbers as evaluate, every PEFT type on one base, one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from serving_support import write_models

from pubmedqa_peft import files, modeling, scoring
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import LABELS, fit_prompts_encoded
from pubmedqa_peft.serving.predictor import BadItemError, PredictError, Predictor, validate_items

METHODS = registry.names()
# Whitespace already normalised, as split rows are (the Predictor normalises its items).
ROWS = [
    {
        "id": f"r{i}",
        "question": f"Does treatment {i} reduce mortality in adults?",
        "context": " ".join(["Patients were randomized."] * (3 * i + 1)),
    }
    for i in range(7)
]


@pytest.fixture(scope="module")
def models_dir(tiny_t5_dir, tmp_path_factory) -> Path:
    """Every registered method, plus a second LoRA (other weights) to share LoRA's PeftModel."""
    out = write_models(tiny_t5_dir, tmp_path_factory.mktemp("serving") / "models", METHODS)
    other = write_models(tiny_t5_dir, tmp_path_factory.mktemp("other") / "models", ("ia3", "lora"))
    shutil.copytree(other / "lora", out / "lora2")
    return out


@pytest.fixture(scope="module")
def predictor(models_dir) -> Predictor:
    return Predictor(models_dir, include_base=True, eval_file=None, device="cpu")


def reference(model_dir: Path, base_dir: Path, rows=ROWS, max_len: int = 96, precision: str = "fp32") -> np.ndarray:
    """P(yes) as evaluate computes it: a freshly loaded model, fitted ids, score_yes_no."""
    device = torch.device("cpu")
    tokenizer = modeling.load_tokenizer(str(base_dir))
    model = (
        modeling.load_trained_model(model_dir, device) if model_dir else modeling.load_base_model(str(base_dir), device)
    )
    prompts = fit_prompts_encoded(tokenizer, rows, max_len, "rows")
    causal = scoring.is_causal(model)
    inputs = [p.text if causal else p.input_ids for p in prompts]
    loglik = scoring.score_yes_no(model, tokenizer, inputs, 8, max_len, progress=False, precision=precision)
    return scoring.probabilities(loglik)


def p_yes(answers: list[dict]) -> np.ndarray:
    return np.array([a["probabilities"]["yes"] for a in answers])


def test_every_method_on_one_base_scores_as_if_loaded_alone(predictor, models_dir, tiny_t5_dir):
    assert predictor.methods == ["base", *METHODS, "lora2"]
    # Interleaved, so any method leaking into another (an injected layer left active on the
    # shared base, the wrong LoRA adapter active) would show.
    got = {m: p_yes(predictor.predict(ROWS, m)) for m in [*predictor.methods, "base", "lora", "prompt"]}
    for m in predictor.methods:
        want = reference(None if m == "base" else models_dir / m, tiny_t5_dir)
        np.testing.assert_allclose(got[m], want, atol=1e-9, err_msg=m)
    assert np.abs(got["lora"] - got["lora2"]).max() > 1e-3  # two different adapters, really
    assert np.abs(got["lora"] - got["base"]).max() > 1e-3


def test_a_precision_scores_as_evaluate_does_in_that_precision(predictor, models_dir, tiny_t5_dir):
    assert predictor.precision == "fp32"  # auto, on a CPU: evaluate's default there too
    bf16 = Predictor(models_dir, ["lora"], eval_file=None, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    got = p_yes(bf16.predict(ROWS, "lora"))
    np.testing.assert_allclose(got, reference(models_dir / "lora", tiny_t5_dir, precision="bf16"), atol=1e-9)
    # Autocast took effect, and it moved the probabilities by rounding only.
    assert 0 < np.abs(got - p_yes(predictor.predict(ROWS, "lora"))).max() < 0.05
    with pytest.raises(PredictError, match=r"^precision=fp16 is not supported on a CPU; set precision: bf16"):
        Predictor(models_dir, ["lora"], eval_file=None, device="cpu", precision="fp16")


def test_answer_shape_and_abstention(models_dir):
    doc = {"test": {"lora": {"tau_target": {"tau": 0.9}}, "prompt": {"tau_target": {"tau": None}}}}
    eval_file = models_dir.parent / "eval.json"
    files.write_json(eval_file, doc)
    pred = Predictor(models_dir, ["lora", "prompt"], eval_file=eval_file, device="cpu")
    assert {m: d["tau"] for m, d in pred.describe().items()} == {"prompt": None, "lora": 0.9}
    assert (
        pred.describe()["lora"]["base_model"]
        == json.loads((models_dir / "lora" / "run.json").read_text())["base_model"]
    )
    answers = pred.predict(ROWS, "lora")
    for a, row in zip(answers, ROWS, strict=True):
        assert set(a) == {"label", "probabilities", "confidence", "abstained", "method", "model", "id"}
        assert a["id"] == row["id"] and a["method"] == "lora" and a["model"] == pred.base_name
        assert list(a["probabilities"]) == list(LABELS)
        assert sum(a["probabilities"].values()) == pytest.approx(1.0)
        assert a["label"] == max(a["probabilities"], key=a["probabilities"].get)
        assert a["confidence"] == pytest.approx(max(a["probabilities"].values()))
        assert a["abstained"] == (a["confidence"] < 0.9)
    assert not any(a["abstained"] for a in pred.predict(ROWS, "prompt"))  # tau None: never abstains
    assert not any(a["abstained"] for a in pred.predict(ROWS, "lora", tau=0.0))
    assert all(a["abstained"] for a in pred.predict(ROWS, "lora", tau=1.0))
    forced = Predictor(models_dir, ["lora"], eval_file=eval_file, tau=0.99, device="cpu")
    assert forced.describe()["lora"]["tau"] == 0.99
    assert [a["abstained"] for a in forced.predict(ROWS)] == [a["confidence"] < 0.99 for a in answers]


def test_items_are_normalised_as_the_data_stage_does(predictor):
    passages = {
        "question": "  Does   treatment reduce\nmortality?",
        "context": ["Patients were  randomized.", "", "All survived."],
    }
    joined = {"question": "Does treatment reduce mortality?", "context": "Patients were randomized. All survived."}
    assert validate_items([passages]) == [joined]
    assert predictor.predict([passages], "lora") == predictor.predict([joined], "lora")
    assert predictor.predict([], "lora") == []


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ({"question": "q", "context": "c"}, "items must be a list of objects, got dict"),
        ("question", "items must be a list of objects, got str"),
        ([{"question": "q", "context": "c"}, "q"], "item 1: must be an object"),
        ([{"context": "c"}], "item 0: 'question' is missing"),
        ([{"question": "q"}], "item 0: 'context' is missing"),
        ([{"question": " \n", "context": "c"}], "item 0: 'question' must be a non-empty string"),
        ([{"question": 3, "context": "c"}], "item 0: 'question' must be a non-empty string, got int"),
        ([{"question": ["q"], "context": "c"}], "item 0: 'question' must be a non-empty string, got list"),
        ([{"question": "q", "context": None}], "item 0: 'context' must be a non-empty string or a list of strings"),
        ([{"question": "q", "context": ["a", 1]}], "item 0: 'context' must be a string or a list of strings"),
        ([{"question": "q", "context": ["", " "]}], "item 0: 'context' must be a non-empty string"),
        ([{"question": "q", "context": "c", "id": 1.5}], "item 0: 'id' must be a string or an integer"),
    ],
)
def test_bad_items_are_named(predictor, items, message):
    with pytest.raises(BadItemError) as err:
        predictor.validate(items)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(BadItemError, match=message[:20]):
        predictor.predict(items, "lora")


def test_a_question_too_long_for_the_budget_names_the_item(predictor):
    items = [ROWS[0], {"question": "Does it work? " * 200, "context": "c"}]
    with pytest.raises(BadItemError, match=r"^item 1: 'question' is too long for method 'lora'"):
        predictor.predict(items, "lora")


def test_method_choice_errors(predictor, models_dir):
    with pytest.raises(PredictError, match=r"several methods are loaded \(base, prompt"):
        predictor.predict(ROWS)
    with pytest.raises(PredictError, match="unknown method 'dora'; loaded: base, prompt"):
        predictor.predict(ROWS, "dora")
    with pytest.raises(PredictError, match="tau must be a number between 0 and 1, got 2"):
        predictor.predict(ROWS, "lora", tau=2)
    with pytest.raises(
        PredictError, match=r"no trained model 'dora' in .*models \(trained methods there: prompt, prefix"
    ):
        Predictor(models_dir, ["dora"])
    with pytest.raises(PredictError, match=r"models directory not found: .*nowhere"):
        Predictor(models_dir / "nowhere")
    with pytest.raises(PredictError, match="batch_size must be >= 1"):
        Predictor(models_dir, batch_size=0)


def test_unusable_model_directories_are_one_line_errors(models_dir, tmp_path):
    bad = tmp_path / "models"
    shutil.copytree(models_dir / "lora", bad / "lora")
    shutil.copytree(models_dir / "prompt", bad / "prompt")
    manifest = json.loads((bad / "lora" / "run.json").read_text())
    (bad / "lora" / "run.json").write_text(json.dumps({**manifest, "labels": ["no", "maybe", "yes"]}))
    with pytest.raises(PredictError, match=r"different label sets \(prompt: \['no', 'yes'\]; lora: \['no', 'maybe'"):
        Predictor(bad, eval_file=None)
    (bad / "lora" / "run.json").write_text(json.dumps({**manifest, "labels": ["no", "perhaps"]}))
    with pytest.raises(PredictError, match=r"task labels must be \[yes, no\] or \[yes, no, maybe\]"):
        Predictor(bad, ["lora"], eval_file=None)
    (bad / "lora" / "run.json").write_text(json.dumps({**manifest, "base_model": "/elsewhere/t5"}))
    with pytest.raises(PredictError, match="trained on different base models"):
        Predictor(bad, eval_file=None)
    (bad / "lora" / "adapter_model.safetensors").unlink()
    with pytest.raises(PredictError, match=r"no adapter_model\.safetensors; retrain it with `dvc repro train_lora`"):
        Predictor(bad, ["lora"], eval_file=None)
    (bad / "lora" / "run.json").unlink()
    assert Predictor(bad, eval_file=None, device="cpu").methods == ["prompt"]  # no run.json: not a trained model
    (bad / "prompt" / "run.json").write_text("{")
    with pytest.raises(PredictError, match=r"prompt/run.json: not a valid run manifest") as err:
        Predictor(bad, eval_file=None)
    assert "\n" not in str(err.value)
    files.write_json(tmp_path / "eval.json", {"test": {"lora": {"tau_target": {}}}})
    with pytest.raises(PredictError, match=r"not a metrics/eval\.json written by evaluate"):
        Predictor(models_dir, ["lora"], eval_file=tmp_path / "eval.json")


def test_works_without_params_yaml_or_the_project(models_dir, tiny_t5_dir, tmp_path, monkeypatch):
    # As after `dvc get`: one method's directory somewhere else, the working directory elsewhere too.
    shutil.copytree(models_dir / "ia3", tmp_path / "fetched" / "ia3")
    monkeypatch.chdir(tmp_path)
    pred = Predictor("fetched", device="cpu")  # the default eval_file is absent here: no tau
    assert pred.methods == ["ia3"] and pred.describe()["ia3"]["tau"] is None
    np.testing.assert_allclose(p_yes(pred.predict(ROWS)), reference(models_dir / "ia3", tiny_t5_dir), atol=1e-9)
    assert Predictor("fetched", ["base"], device="cpu").methods == ["base"]  # run.json names the base


def test_decoder_only_model(tiny_model_dir, tmp_path):
    base = tiny_model_dir("tiny-llama")
    models = write_models(base, tmp_path / "models", ("prompt", "lora"))
    pred = Predictor(models, include_base=True, eval_file=None, device="cpu")
    for m in ("prompt", "lora"):
        # the causal budget leaves room for the answer, as evaluate's does
        budget = modeling.load_family(str(base)).prompt_budget(modeling.load_tokenizer(str(base)), LABELS, 96)
        np.testing.assert_allclose(p_yes(pred.predict(ROWS, m)), reference(models / m, base, max_len=budget), atol=1e-9)


@pytest.mark.e2e
def test_predictions_equal_evaluate_on_the_test_split(pipeline_repo):
    """The issue's proof: the Predictor's P(yes) equals plots/eval/predictions/<method>.csv within 1e-6."""
    rows = files.read_jsonl(pipeline_repo / "data" / "splits" / "test.jsonl")
    doc = json.loads((pipeline_repo / "metrics" / "eval.json").read_text())
    pred = Predictor(
        pipeline_repo / "models", include_base=True, eval_file=pipeline_repo / "metrics" / "eval.json", device="cpu"
    )
    assert pred.methods == ["base", *METHODS]
    for m in pred.methods:
        assert pred.describe()[m]["tau"] == doc["test"][m]["tau_target"]["tau"]
        answers = {a["id"]: a for a in pred.predict(rows, m)}
        with (pipeline_repo / "plots" / "eval" / "predictions" / f"{m}.csv").open() as fh:
            expected = list(csv.DictReader(fh))
        assert len(expected) == len(rows) == len(answers)
        for e in expected:
            a = answers[e["id"]]
            assert abs(a["probabilities"]["yes"] - float(e["p_yes"])) <= 1e-6, (m, e["id"])
            assert a["label"] == e["prediction"], (m, e["id"])
            assert abs(a["confidence"] - float(e["confidence"])) <= 1e-6
