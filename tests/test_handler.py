"""handler.py: the Hugging Face Inference Endpoints interface on an uploaded repository's layout."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from serving_support import write_models

from pubmedqa_peft import files
from pubmedqa_peft.serving.predictor import BadItemError, PredictError, Predictor

HANDLER = Path(__file__).resolve().parents[1] / "handler.py"
ITEM = {"question": "Does aspirin reduce mortality after infarction?", "context": "Patients were randomized."}
OTHER = {"id": "x1", "question": "Is surgery safer?", "context": ["Complications were fewer.", "Stays were shorter."]}


def load_handler_class():
    # As the endpoint does: handler.py imported by its path, not as part of a package.
    spec = importlib.util.spec_from_file_location("endpoint_handler", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler


@pytest.fixture(scope="module")
def repository(tiny_t5_dir, tmp_path_factory) -> Path:
    """The layout the module docstring says to upload; run.json names a base path the endpoint lacks."""
    repo = tmp_path_factory.mktemp("endpoint") / "repository"
    write_models(tiny_t5_dir, repo / "models", ("prompt", "lora"))
    for m in ("prompt", "lora"):
        manifest = repo / "models" / m / "run.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "base_model": "/training/machine/t5"}))
    shutil.copytree(tiny_t5_dir, repo / "base_model")
    files.write_json(repo / "metrics" / "eval.json", {"test": {"lora": {"tau_target": {"tau": 0.95}}}})
    return repo


@pytest.fixture(scope="module")
def handler(repository):
    return load_handler_class()(str(repository))


def test_one_item_or_many(handler, repository):
    # An independent Predictor given the base's copy: the handler found base_model/ itself.
    reference = Predictor(repository / "models", eval_file=repository / "metrics" / "eval.json",
                          base_model=str(repository / "base_model"))  # fmt: skip
    (one,) = handler({"inputs": ITEM, "parameters": {"method": "lora"}})
    assert one == reference.predict([ITEM], "lora")[0]
    assert one["model"] == "/training/machine/t5" and one["method"] == "lora"
    assert one["abstained"] == (one["confidence"] < 0.95)  # tau from metrics/eval.json
    many = handler({"inputs": [ITEM, OTHER], "parameters": {"method": "prompt", "tau": 0.99}})
    assert many == reference.predict([ITEM, OTHER], "prompt", tau=0.99)
    assert many[1]["id"] == "x1" and many[0]["probabilities"] != one["probabilities"]


def test_default_method_from_the_environment(repository, monkeypatch):
    monkeypatch.setenv("PUBMEDQA_METHOD", "prompt")
    handler = load_handler_class()(str(repository))
    assert handler({"inputs": [ITEM]})[0]["method"] == "prompt"
    monkeypatch.setenv("PUBMEDQA_METHOD", "dora")
    with pytest.raises(PredictError, match=r"PUBMEDQA_METHOD='dora' is not a trained method here \(prompt, lora\)"):
        load_handler_class()(str(repository))


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ({"question": "q"}, BadItemError, 'the request body must be an object with "inputs"'),
        ({"inputs": [ITEM]}, PredictError, r"several methods are loaded \(prompt, lora\): name one"),
        ({"inputs": "Does it work?", "parameters": {"method": "lora"}}, BadItemError, "items must be a list"),
        ({"inputs": [ITEM, {"question": "q"}], "parameters": {"method": "lora"}}, BadItemError,
         "item 1: 'context' is missing"),
        ({"inputs": [ITEM], "parameters": {"method": "ia3"}}, PredictError, "unknown method 'ia3'"),
        ({"inputs": [ITEM], "parameters": {"method": 3}}, PredictError, '"method" must be a string'),
        ({"inputs": [ITEM], "parameters": {"method": "lora", "tau": "high"}}, PredictError, "tau must be a number"),
        ({"inputs": [ITEM], "parameters": {"methd": "lora"}}, PredictError,
         "unknown parameter 'methd'; allowed: method, tau"),
        ({"inputs": [ITEM], "parameters": ["lora"]}, PredictError, '"parameters" must be an object'),
    ],
)  # fmt: skip
def test_bad_requests_raise_one_line_errors(handler, data, error, message):
    with pytest.raises(error, match=message) as err:
        handler(data)
    assert "\n" not in str(err.value)
