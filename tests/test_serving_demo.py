"""The demo page (pubmedqa_peft.serving.demo, ``python -m pubmedqa_peft.demo``).

Fast tests build the page on the real Predictor over tiny model directories
(``serving_support.write_models``); the end-to-end test starts the demo as a real process
on the models the real pipeline trained (``pipeline_repo``), drives it with
``gradio_client`` and renders it once in headless Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serving_support import write_models

from pubmedqa_peft.prompts import LABELS
from pubmedqa_peft.serving import demo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What a closed network needs: no background fetches, no sandbox (root in a container), a fresh profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1600",
    # Gradio renders with JS after fetching its config; virtual time lets all of that finish.
    "--virtual-time-budget=15000",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def predictor(tiny_t5_dir, tmp_path_factory):
    from pubmedqa_peft.serving.predictor import Predictor

    models = write_models(tiny_t5_dir, tmp_path_factory.mktemp("demo") / "models", ("prompt", "lora"))
    return Predictor(models, include_base=True, eval_file=None)


def expected_outputs(predictor, question: str, context: str, tau: dict | None = None) -> list:
    """What the page must show: per method its P(label) bars and answer line, then the raw predictions."""
    predictions = [predictor.predict([{"question": question, "context": context}], m)[0] for m in predictor.methods]
    out: list = []
    for method, p in zip(predictor.methods, predictions, strict=True):
        out += [{label: p["probabilities"][label] for label in LABELS}, demo.format_answer(p, (tau or {}).get(method))]
    return [*out, predictions]


# --- the pieces -----------------------------------------------------------------------------


def test_examples_are_the_first_of_each_label_and_none_without_a_split(tmp_path):
    rows = [
        {"id": "1", "question": "q1?", "context": "c1", "label": "yes"},
        {"id": "2", "question": "q2?", "context": ["p", "q"], "label": "yes"},
        {"id": "3", "question": "q3?", "context": "c3", "label": "yes"},
        {"id": "4", "question": "q4?", "context": "c4", "label": "no"},
    ]
    split = tmp_path / "test.jsonl"
    split.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = demo.load_examples(split, per_label=2)
    assert [(e["question"], e["label"]) for e in got] == [("q4?", "no"), ("q1?", "yes"), ("q2?", "yes")]
    assert got[2]["context"] == "p q"  # passages joined as the data stage joins them
    assert demo.load_examples(tmp_path / "absent.jsonl") == []
    split.write_text('{"question": "q"}\n')
    with pytest.raises(demo.DemoError, match=r"test\.jsonl: record 1 has no 'context'"):
        demo.load_examples(split)


def test_answer_line_says_abstains_below_tau():
    sure = {"label": "yes", "probabilities": {"no": 0.2, "yes": 0.8}, "confidence": 0.8, "abstained": False}
    unsure = {**sure, "confidence": 0.55, "probabilities": {"no": 0.45, "yes": 0.55}, "abstained": True}
    assert demo.format_answer(sure, 0.6) == "yes (confidence 0.80)"
    assert demo.format_answer(unsure, 0.6) == "abstains: confidence 0.55 is below tau 0.60 (it would have said yes)"


def test_the_page_answers_as_the_predictor_does(predictor):
    question, context = "Does aspirin reduce mortality after myocardial infarction?", "Patients were randomized."
    got = demo.answer_fn(predictor)(question, context)
    assert list(got) == expected_outputs(predictor, question, context)
    assert predictor.methods[0] == "base"  # the base model is always there to compare with


def test_the_page_says_abstains_below_the_methods_tau(predictor):
    from pubmedqa_peft.serving.predictor import Predictor

    strict = Predictor(predictor.models_dir, ["prompt"], tau=1.0, eval_file=None)  # nothing is that sure
    bars, line, (raw,) = demo.answer_fn(strict)("Is it safe?", "Twelve patients.")
    assert raw["abstained"]
    assert line == f"abstains: confidence {raw['confidence']:.2f} is below tau 1.00 (it would have said {raw['label']})"
    assert bars == {label: raw["probabilities"][label] for label in LABELS}  # the bars still show P(label)


def test_bad_input_is_a_one_line_error_on_the_page(predictor):
    import gradio as gr

    with pytest.raises(gr.Error, match="'question' must be a non-empty string"):
        demo.answer_fn(predictor)("   ", "some context")


def test_page_served_in_process_answers_through_gradio_client(predictor):
    from gradio_client import Client

    examples = [{"question": "Is early surgery better?", "context": "A cohort of 40 patients.", "label": "yes"}]
    page = demo.build_demo(predictor, examples)
    port = free_port()
    page.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
        question, context = "Do statins lower risk?", "Risk ratio 0.8 (95% CI 0.7 to 0.9)."
        got = client.predict(question, context, api_name="/answer")
        want = expected_outputs(predictor, question, context)
        # gr.Label comes back as {"label", "confidences": [...]}; the answers and the raw JSON as they are
        assert [_bars(v) for v in got[:-1:2]] == want[:-1:2]
        assert list(got[1:-1:2]) == want[1:-1:2]
        assert got[-1] == want[-1]
        # The page opens on the first example, answered: its answers are the components' initial values.
        config = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/config").read())
        answers = [
            c["props"]["value"] for c in config["components"] if c["props"].get("label", "").startswith("answer")
        ]
        assert answers == expected_outputs(predictor, examples[0]["question"], examples[0]["context"])[1:-1:2]
        # The heading names the answers the models choose between (the manifests' labels).
        headings = [c["props"]["value"] for c in config["components"] if str(c["props"].get("value")).startswith("# ")]
        assert headings == ["# PubMedQA yes/no: the base model and each fine-tuned method"]
        assert predictor.task.display == ("yes", "no")
    finally:
        page.close()


def _bars(label_value: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_value["confidences"]}


def test_startup_errors_are_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--models-dir", str(tmp_path / "nowhere"), "--port", str(free_port())])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: demo: models directory not found:") and "nowhere" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            demo.main(["--port", str(port)])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: demo: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port"]


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_precision_the_device_cannot_run_stops_startup_in_one_line(predictor, command, monkeypatch, capsys):
    from pubmedqa_peft import serve

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    run = demo.main if command == "demo" else serve.main
    argv = ["--models-dir", str(predictor.models_dir), "--device", "cpu", "--precision", "fp16", "--port", "0"]
    with pytest.raises(SystemExit) as exit_info:
        run(argv if command == "serve" else [*argv[:-1], str(free_port())])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    message = "precision=fp16 is not supported on a CPU; set precision: bf16 (or fp32 or auto)"
    assert lines[-1] == f"error: {command}: {message}"


# --- end to end: the real command on the pipeline's models, a real browser -------------------


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the demo did not answer on {url} within {timeout_s} s:\n{log.read_text()}")


def _chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    return subprocess.run(cmd, capture_output=True, timeout=120, check=True)


@pytest.mark.e2e
def test_demo_command_serves_the_pipelines_models_and_renders_in_a_browser(pipeline_repo, tmp_path):
    from e2e_support import env
    from gradio_client import Client
    from PIL import Image

    from pubmedqa_peft.serving.predictor import Predictor

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        # No --host: the page must be on loopback by default.
        proc = subprocess.Popen(
            [sys.executable, "-m", "pubmedqa_peft.demo", "--port", str(port), "--device", "cpu"],
            cwd=pipeline_repo,
            env={**env(), "GRADIO_ANALYTICS_ENABLED": "False"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(proc, url, log)
        predictor = Predictor(
            pipeline_repo / "models", include_base=True, eval_file=pipeline_repo / "metrics" / "eval.json"
        )
        taus = {m: info["tau"] for m, info in predictor.describe().items()}
        examples = demo.load_examples(pipeline_repo / "data" / "splits" / "test.jsonl")
        assert examples, "the pipeline's test split gives the page its examples"

        client = Client(url, verbose=False, analytics_enabled=False)
        for example in examples[:2]:
            got = client.predict(example["question"], example["context"], api_name="/answer")
            want = expected_outputs(predictor, example["question"], example["context"], taus)
            assert got[-1] == want[-1]  # the raw predictions: Predictor.predict's, to the last bit
            assert list(got[1:-1:2]) == want[1:-1:2]  # the answer lines, "abstains" where below tau
        trained = [d for d in (pipeline_repo / "models").iterdir() if (d / "run.json").is_file()]
        assert len(got[-1]) == len(predictor.methods) == 1 + len(trained)  # the base model and every method

        # One render in a real browser: the disclaimer, every model's bars with the first example's numbers.
        shot = tmp_path / "demo.png"
        dom = _chromium(url, tmp_path / "profile", f"--screenshot={shot}", "--dump-dom").stdout.decode()
        assert demo.DISCLAIMER in dom
        assert "[gold: " in dom
        first = expected_outputs(predictor, examples[0]["question"], examples[0]["context"], taus)[-1]
        shown = [int(v) for v in re.findall(r'aria-label="(?:' + "|".join(LABELS) + r')" aria-valuenow="(\d+)"', dom)]
        bars = [round(100 * p["probabilities"][label]) for p in first for label in _by_confidence(p)]
        assert np.allclose(shown, bars, atol=1), (shown, bars)

        pixels = np.asarray(Image.open(shot).convert("RGB"))
        assert pixels.shape[:2] == (1600, 1400)
        assert pixels.std() > 20  # not one flat colour
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text, bars, buttons: many colours
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _by_confidence(prediction: dict) -> list[str]:
    """The labels in the order gr.Label draws them: most probable first (ties keep LABELS order)."""
    return sorted(LABELS, key=lambda label: -prediction["probabilities"][label])
