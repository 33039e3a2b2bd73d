"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The real PubMedQA files live beside the project (../shared), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pubmedqa"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding the real ``ori_pqal.json`` and ``test_ground_truth.json``.

    Skips the test (with the reason) if ``../shared/data/pubmedqa`` is absent.
    """
    needed = ("ori_pqal.json", "test_ground_truth.json")
    if not all((SHARED_DATA / name).is_file() for name in needed):
        pytest.skip(f"real PubMedQA data not found at {SHARED_DATA} (expected {', '.join(needed)})")
    return SHARED_DATA


# --- tiny random model (owned with pubmedqa_peft/random_model.py) ----------------------------

_CORPUS_WORDS = (
    "patients treatment cohort randomized trial outcome mortality survival infarction myocardial hypertension "
    "carcinoma laparoscopic cholecystectomy methylprednisolone immunohistochemistry postoperative complications "
    "significantly associated increased decreased compared children women risk ratio confidence interval analysis "
    "the of and in with was were for to a no not than after before"
)


def write_generated_corpus(path: Path, records: int = 200, seed: int = 0) -> Path:
    """Write a PubMedQA-shaped JSON of pseudo-random biomedical sentences (no ``yes`` in it).

    Used when the real corpus is absent, so model tests still run; deterministic for a seed.
    """
    import json
    import random

    rng = random.Random(seed)
    vocabulary = _CORPUS_WORDS.split()

    def sentence(n: int) -> str:
        words = [rng.choice(vocabulary) for _ in range(n)]
        return " ".join(words).capitalize() + rng.choice([".", ".", "?", " (p<0.05)."])

    data = {
        str(10_000_000 + i): {
            "QUESTION": sentence(rng.randint(6, 14))[:-1] + "?",
            "CONTEXTS": [" ".join(sentence(rng.randint(8, 25)) for _ in range(3)) for _ in range(rng.randint(2, 4))],
            "LONG_ANSWER": sentence(rng.randint(10, 30)),
            "final_decision": rng.choice(["yes", "no", "maybe"]),
        }
        for i in range(records)
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def generated_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated PubMedQA-shaped corpus file (see :func:`write_generated_corpus`)."""
    return write_generated_corpus(tmp_path_factory.mktemp("corpus") / "generated_pqal.json")


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``tiny-t5`` random-weight model directory, built once per test session.

    Built by ``pubmedqa_peft.random_model`` exactly as the command does, so it loads with
    ``modeling.load_tokenizer`` / ``modeling.load_base_model``. Its tokenizer is trained on
    the real PubMedQA corpus when ``../shared`` is present (realistic token lengths), and
    otherwise on a generated PubMedQA-shaped corpus, so that model tests run everywhere.
    """
    from pubmedqa_peft.random_model import write_random_model

    root = tmp_path_factory.mktemp("tiny_t5")
    corpus = SHARED_DATA / "ori_pqal.json"
    if not corpus.is_file():
        corpus = write_generated_corpus(root / "generated_pqal.json")
    write_random_model("tiny-t5", root / "model", corpus, seed=0)
    return root / "model"


# --- cleaned records for model tests -------------------------------------------------------


@pytest.fixture(scope="session")
def pqal_rows(shared_data: Path) -> list[dict]:
    """The 890 cleaned yes/no records of the real PQA-L file, in file order."""
    from pubmedqa_peft.data import clean_records, read_raw

    return clean_records(read_raw(shared_data / "ori_pqal.json"), ("yes", "no")).records


def gradient_probe() -> Any:
    """A Trainer callback that records, before each optimizer step, the trainable parameters with no gradient.

    Training runs DDP without its search for unused parameters (``modeling.skips_layers``);
    a method that left a trainable parameter out of a step would fail there, so the method
    tests check ``probe.missing == set()`` (and ``probe.steps > 0``).
    """
    from transformers import TrainerCallback

    class GradientProbe(TrainerCallback):
        def __init__(self) -> None:
            self.steps = 0
            self.missing: set[str] = set()

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.steps += 1
            self.missing |= {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}

    return GradientProbe()


def tiny_params(model_dir: Path, **sections: dict) -> object:
    """Params for fast model tests: the tiny model, short inputs, small batches."""
    from pubmedqa_peft.config import parse_params

    doc: dict = {
        "model": {"name": str(model_dir), "max_source_length": 96},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 8, "logging_steps": 1, "warmup_ratio": 0.0},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return parse_params(doc)


# --- a whole pipeline run, shared by the end-to-end tests ----------------------------------


@pytest.fixture(scope="session")
def e2e_params(tiny_t5_dir: Path, shared_data: Path) -> dict:
    """params.yaml overrides for end-to-end runs: the real data, the tiny model, small settings."""
    from e2e_support import E2E_PARAMS

    return {
        "ingest.source": str(shared_data / "ori_pqal.json"),
        "model.name": str(tiny_t5_dir),
        **E2E_PARAMS,
    }


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory, e2e_params: dict) -> Path:
    """A committed repo in which the whole pipeline ran once (``dvc repro``) and was committed.

    Tests must not change it: they take the ``clone`` fixture to experiment.
    """
    from e2e_support import commit_all, dvc, make_repo

    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo", e2e_params)
    dvc(repo, "repro")
    commit_all(repo, "pipeline run")
    return repo


@pytest.fixture
def clone(pipeline_repo: Path, tmp_path: Path) -> Path:
    """A working copy of the finished pipeline sharing its DVC cache, free to change."""
    from e2e_support import dvc, git

    dest = tmp_path / "clone"
    git(pipeline_repo, "clone", "-q", str(pipeline_repo), str(dest))
    dvc(dest, "cache", "dir", "--local", str(pipeline_repo / ".dvc" / "cache"))
    dvc(dest, "checkout")
    return dest


# --- tiny random decoder-only models (owned with pubmedqa_peft/random_model.py) ---------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A factory: ``tiny_model_dir("tiny-llama")`` is that random-weight model's directory.

    Each architecture is built at most once per test session, by ``write_random_model`` as
    the command does but without measuring prompt lengths (BioGPT's Python tokenizer takes
    seconds over PQA-L). Like ``tiny_t5_dir``, the tokenizer learns from the real PubMedQA
    corpus when ``../shared`` is present and from a generated one otherwise.
    """
    from pubmedqa_peft.random_model import write_random_model

    built: dict[str, Path] = {}

    def build(arch: str) -> Path:
        if arch not in built:
            root = tmp_path_factory.mktemp(arch)
            corpus = SHARED_DATA / "ori_pqal.json"
            if not corpus.is_file():
                corpus = write_generated_corpus(root / "generated_pqal.json")
            write_random_model(arch, root / "model", corpus, seed=0, prompt_stats=False)
            built[arch] = root / "model"
        return built[arch]

    return build
