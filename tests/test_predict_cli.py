"""``python -m pubmedqa_peft.predict``: single, file and piped interactive modes, and bad input.

The fast tests call ``main`` in this process; the e2e test runs every mode as a real
process on a model fetched with ``dvc get`` from the shared pipeline run.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import dvc
from serving_support import write_models

from pubmedqa_peft import files
from pubmedqa_peft.serving import cli
from pubmedqa_peft.serving.predictor import Predictor

PROJECT = Path(__file__).resolve().parents[1]
ITEMS = [
    {"id": "a", "question": "Does aspirin reduce mortality after infarction?", "context": "Patients were randomized."},
    {"question": "Is laparoscopic surgery safer?", "context": ["Complications were fewer.", "Stays were shorter."]},
    {"id": 7, "question": "Do statins help?", "context": "A cohort of 200 patients was followed."},
]


@pytest.fixture(scope="module")
def models(tiny_t5_dir, tmp_path_factory) -> Path:
    return write_models(tiny_t5_dir, tmp_path_factory.mktemp("cli") / "models", ("prompt", "lora"))


@pytest.fixture(scope="module")
def expected(models) -> list[dict]:
    return Predictor(models, ["lora"], eval_file=None, device="cpu").predict(ITEMS, "lora")


def run(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a real process, in ``cwd``."""
    env = {"PYTHONPATH": str(PROJECT), "PATH": str(Path(sys.executable).parent), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pubmedqa_peft.predict", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )


def main(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[str, str]:
    """The command in this process (fast: torch is already imported); its stdout and stderr."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))  # not a terminal: JSON lines out
    cli.main(list(argv))
    out = capsys.readouterr()
    return out.out, out.err


def same(answer: dict, want: dict, tol: float = 1e-6) -> None:
    """Equal answers, probabilities up to float rounding (batches pad differently), ids aside."""
    rest = ("probabilities", "confidence", "id")
    assert {k: v for k, v in answer.items() if k not in rest} == {k: v for k, v in want.items() if k not in rest}
    assert answer["probabilities"] == pytest.approx(want["probabilities"], abs=tol)
    assert answer["confidence"] == pytest.approx(want["confidence"], abs=tol)


def test_single_question(models, expected, capsys):
    item = ITEMS[0]
    out, _ = main(capsys, "--models-dir", str(models), "--method", "lora", "--question", item["question"],
                  "--context", item["context"])  # fmt: skip
    (line,) = out.splitlines()
    answer = json.loads(line)
    same(answer, expected[0])
    assert "id" not in answer


def test_precision_reaches_the_scoring(models, capsys):
    item = ITEMS[0]
    out, _ = main(capsys, "--models-dir", str(models), "--method", "lora", "--question", item["question"],
                  "--context", item["context"], "--precision", "bf16")  # fmt: skip
    (want,) = Predictor(models, ["lora"], eval_file=None, precision="bf16").predict([item], "lora")
    same(json.loads(out), want, tol=1e-9)


def test_file_mode_with_tau(models, expected, tmp_path, capsys):
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" + ("\n" if n == 0 else "") for n, i in enumerate(ITEMS)))
    target = tmp_path / "out" / "answers.jsonl"
    out, err = main(capsys, "--models-dir", str(models), "--method", "lora", "--input", str(source),
                    "--output", str(target), "--tau", "0.99", "--batch-size", "2")  # fmt: skip
    assert out == "" and "wrote 3 answers" in err and "predicting items.jsonl" in err  # the progress bar
    answers = [json.loads(line) for line in target.read_text().splitlines()]
    assert [a.get("id") for a in answers] == ["a", None, 7]
    for a, want in zip(answers, expected, strict=True):
        same(a, {**want, "abstained": want["confidence"] < 0.99})
    assert [p.name for p in target.parent.iterdir()] == ["answers.jsonl"]  # no temporary left behind


def test_interactive_from_piped_stdin(models, expected, capsys, monkeypatch):
    lines = [ITEMS[0]["question"], ITEMS[0]["context"], ITEMS[2]["question"], ITEMS[2]["context"], "", "ignored"]
    out, _ = main(capsys, "--models-dir", str(models), "--method", "lora", stdin="\n".join(lines) + "\n",
                  monkeypatch=monkeypatch)  # fmt: skip
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == 2  # the empty question line ended the session
    for a, want in zip(answers, [expected[0], expected[2]], strict=True):
        same(a, want)


def test_bad_piped_input_names_the_line(models, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Does it work?\n   \n"))
    code, err = cli_error(capsys, "--models-dir", str(models), "--method", "lora")
    assert code == 1 and err == "error: predict: stdin:2: 'context' must be a non-empty string"


def cli_error(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    return exc.value.code, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"question": "q", "context": "c"}', "{not json"], "items.jsonl:2: not valid JSON"),
        (['{"question": "q", "context": "c"}', "", '{"question": "", "context": "c"}'],
         "items.jsonl:3: 'question' must be a non-empty string"),
        (['["q", "c"]'], "items.jsonl:1: must be an object with 'question' and 'context', got list"),
        (['{"question": "q", "context": 5}'], "items.jsonl:1: 'context' must be a non-empty string or a list"),
        (["", "  "], "items.jsonl: no items (expected one JSON object per line)"),
    ],
)  # fmt: skip
def test_bad_input_file_lines(models, tmp_path, capsys, lines, message):
    source = tmp_path / "items.jsonl"
    source.write_text("\n".join(lines) + "\n")
    target = tmp_path / "answers.jsonl"
    code, err = cli_error(capsys, "--models-dir", str(models), "--method", "lora", "--input", str(source),
                          "--output", str(target))  # fmt: skip
    assert code == 1 and err.startswith("error: predict: ") and message in err
    assert not target.exists()


def test_a_question_too_long_names_its_line(models, tmp_path, capsys):
    source = tmp_path / "items.jsonl"
    source.write_text(json.dumps(ITEMS[0]) + "\n" + json.dumps({"question": "Why? " * 300, "context": "c"}) + "\n")
    code, err = cli_error(capsys, "--models-dir", str(models), "--method", "lora", "--input", str(source),
                          "--output", str(tmp_path / "out.jsonl"))  # fmt: skip
    assert code == 1 and err.startswith(f"error: predict: {source}:2: 'question' is too long for method 'lora'")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--question", "q"], 2, "--question and --context go together"),
        (["--input", "x.jsonl"], 2, "--input and --output go together"),
        (["--question", "q", "--context", "c", "--input", "x", "--output", "y"], 2, "not both"),
        (["--tau", "1.5", "--question", "q", "--context", "c"], 2, "argument --tau: must be between 0 and 1"),
        (["--batch-size", "0", "--question", "q", "--context", "c"], 2, "argument --batch-size: must be >= 1"),
        (["--question", "q", "--context", "c"], 1, "holds several trained methods (prompt, lora); choose one"),
        (["--method", "dora", "--question", "q", "--context", "c"], 1, "no trained model 'dora'"),
        (["--method", "lora", "--question", " ", "--context", "c"], 1, "'question' must be a non-empty string"),
        (["--method", "lora", "--input", "missing.jsonl", "--output", "y"], 1, "input file not found: missing.jsonl"),
        (["--precision", "fp8", "--question", "q", "--context", "c"], 2, "argument --precision: invalid choice: 'fp8'"),
        (
            ["--method", "lora", "--device", "cpu", "--precision", "fp16", "--question", "q", "--context", "c"],
            1,
            "precision=fp16 is not supported on a CPU; set precision: bf16",
        ),
    ],
)
def test_bad_arguments(models, capsys, argv, code, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    got_code, err = cli_error(capsys, "--models-dir", str(models), *argv)
    assert got_code == code and message in err
    if code == 1:
        assert err.startswith("error: predict: ")


def test_missing_models_dir(tmp_path, capsys):
    code, err = cli_error(capsys, "--models-dir", str(tmp_path / "nope"), "--question", "q", "--context", "c")
    assert code == 1
    assert (
        err == f"error: predict: models directory not found: {tmp_path / 'nope'}; train with `dvc repro` or fetch one"
    )


@pytest.mark.e2e
def test_real_processes_on_a_model_fetched_with_dvc_get(pipeline_repo, tmp_path):
    """As a user elsewhere: `dvc get` one method, no project around it, every mode as a real process."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    dvc(work, "get", str(pipeline_repo), "models/lora", "-o", "models/lora")
    assert not (work / "params.yaml").exists()
    shutil.copytree(pipeline_repo / "metrics", work / "metrics")  # evaluate's tau, as `dvc get metrics` gives it
    rows = files.read_jsonl(pipeline_repo / "data" / "splits" / "test.jsonl")
    files.write_jsonl(work / "test.jsonl", [{k: r[k] for k in ("id", "question", "context")} for r in rows])

    proc = run(work, "--input", "test.jsonl", "--output", "answers.jsonl")  # the only method: no --method needed
    assert proc.returncode == 0, proc.stderr
    answers = {a["id"]: a for a in files.read_jsonl(work / "answers.jsonl")}
    tau = json.loads((work / "metrics" / "eval.json").read_text())["test"]["lora"]["tau_target"]["tau"]
    with (pipeline_repo / "plots" / "eval" / "predictions" / "lora.csv").open() as fh:
        for e in csv.DictReader(fh):
            a = answers[e["id"]]
            assert abs(a["probabilities"]["yes"] - float(e["p_yes"])) <= 1e-6 and a["label"] == e["prediction"]
            assert a["abstained"] == (tau is not None and a["confidence"] < tau)

    first, second = rows[0], rows[1]
    proc = run(work, "--question", first["question"], "--context", first["context"])
    assert proc.returncode == 0, proc.stderr
    same(json.loads(proc.stdout), answers[first["id"]])
    piped = "\n".join([first["question"], first["context"], second["question"], second["context"]]) + "\n"
    proc = run(work, stdin=piped)  # end of input ends the session
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    for a, row in zip(got, (first, second), strict=True):
        same(a, answers[row["id"]])
    proc = run(work, "--method", "prompt", "--question", "q", "--context", "c")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == ("error: predict: no trained model 'prompt' in models (trained methods there: lora)")
