"""Training learns (issue 13 item 4): the planted-label data set through ``dvc repro``.

The real PQA-L questions and contexts, relabelled in balance with the answer planted in
each context as a label-dependent sentence at a random word position
(:mod:`pubmedqa_peft.sanity`), go through every real stage on the random ``tiny-t5-wide``
(d_model 128: at ``tiny-t5``'s 64 the frozen output head caps any answer's probability
near 0.3, see :mod:`pubmedqa_peft.random_model`, and prefix tuning stayed at the majority
rate). Every trained method must read the planted answer back through ``evaluate``; the
untrained ``base`` must not.

"Near chance" for ``base``: its test accuracy within :data:`NEAR_CHANCE` of 1/K. A random
model that ignores the cue scores 1/K in expectation with a binomial standard deviation of
sqrt((1/K)(1 - 1/K)/n): 0.05 binary and 0.047 with three labels on the 100 test records, so
0.15 is three standard deviations, and still far below the trained methods' bar (0.9
binary, 0.85 three labels), so base and a trained method cannot be mistaken for each other.

Why ``train.model_dropout`` is 0 here: prompt tuning trains only the soft prompt, and the
soft prompt must steer the frozen random encoder's and decoder's attention to the cue. With
the model's own dropout (0.1 on every T5 layer and attention map) that steering drowns in
noise: on ``tiny-t5-wide`` the binary run ranked by the cue (ROC AUC 0.98) but never answered
from it (accuracy 0.50, training loss 2.39), the three-label run did not even rank, and
learning rates of 0.1 to 3, 100 virtual tokens, more heads, layers or width changed nothing.
In an in-process loop with the same updates, no dropout reached 1.00 within 200 updates
(binary and three labels, seeds 42 and 1) with 50 virtual tokens at lr 0.3 (with 20 the
three-label run needed up to 400 updates and missed on one seed). A pretrained model's
features survive dropout far better than a random one's, so this is a setting for the test
model, not a reason to change the default; prefix tuning, LoRA, IA3 and full fine-tuning
passed with the model's dropout too (at 5 epochs).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import dvc, make_repo, read_json

from pubmedqa_peft.methods import registry
from pubmedqa_peft.modeling import load_tokenizer
from pubmedqa_peft.prompts import format_prompt
from pubmedqa_peft.random_model import write_random_model
from pubmedqa_peft.sanity import write_planted
from pubmedqa_peft.task import Task

pytestmark = pytest.mark.e2e

WORDS = 10
"""Real context words kept per record: the cue is a large part of a short input."""

SANITY_PARAMS = {
    # Every planted prompt fits whole (checked below), so the cue is never cut away.
    "model.max_source_length": 192,
    # 800 training records x 3 epochs = 300 updates of 8 with the rates below. On
    # tiny-t5-wide without dropout every method scores 1.00, binary and three labels (train
    # seed 42; LoRA 0.99 binary); 5 epochs did too, 2 left prompt tuning at 0.66 with three
    # labels. The two runs take 4.7 minutes on both cores (5.9 on one thread). With the
    # model's dropout and 5 epochs, on tiny-t5, LoRA, IA3 and full passed on seeds 42, 1
    # and 2 (IA3 checked at 0.1, which left the three-label run at 0.81, hence 0.2), and a
    # quarter of those updates left LoRA at the majority rate.
    "train.epochs": 3,
    "train.batch_size": 8,
    "train.max_train_examples": None,
    "train.logging_steps": 25,
    "train.warmup_ratio": 0.06,
    # No dropout in the frozen random model: with T5's 0.1 prompt tuning stayed at the
    # majority rate (see the module docstring); the other methods passed with it too.
    "train.model_dropout": 0.0,
    "train_prompt.lr": 0.3,
    "train_prompt.num_virtual_tokens": 50,
    "train_prefix.lr": 0.1,
    "train_lora.lr": 0.01,
    "train_ia3.lr": 0.2,
    "train_full.lr": 0.001,
    # Baselines and timings are not what this run checks: the fewest that still run.
    "evaluate.fewshot_k": [],
    "evaluate.bootstrap": 100,
    "evaluate.latency_samples": 2,
    "evaluate.latency_warmup": 1,
}

NEAR_CHANCE = 0.15
"""How far from 1/K ``base`` may score (three binomial standard deviations, see above)."""

BAR = {2: 0.9, 3: 0.85}
"""Test accuracy every trained method must reach, by number of labels."""


def sanity_run(root: Path, model: Path, source: Path, labels: tuple[str, ...]) -> dict:
    """Generate the planted data set under ``root``, ``dvc repro`` on it, return ``metrics/eval.json``."""
    data = root / "planted.json"
    sha = write_planted(source, data, labels, seed=0, max_context_words=WORDS)
    params = {
        "ingest.source": str(data),
        "ingest.sha256": sha,
        "model.name": str(model),
        "task.labels": list(labels),
        **SANITY_PARAMS,
    }
    _check_prompts_fit(data, model, labels, SANITY_PARAMS["model.max_source_length"])
    repo = make_repo(root / "repo", params)
    dvc(repo, "repro")
    return read_json(repo / "metrics" / "eval.json")


def _check_prompts_fit(data: Path, model: Path, labels: tuple[str, ...], max_length: int) -> None:
    """Every planted prompt fits ``max_length`` untruncated, so no cue is cut off."""
    tokenizer = load_tokenizer(str(model))
    task = Task.of(labels)
    for pmid, r in read_json(data).items():
        ids = tokenizer(format_prompt(r["QUESTION"], " ".join(r["CONTEXTS"]), task)).input_ids
        assert len(ids) <= max_length, f"{pmid}: {len(ids)} tokens"


def _accuracies(doc: dict) -> dict[str, float]:
    return {m: doc["test"][m]["accuracy"] for m in ("majority", "base", *registry.names())}


def _assert_baselines(doc: dict, k: int) -> None:
    accuracies = _accuracies(doc)
    # The planted labels are balanced: the majority rate is 1/K.
    assert accuracies["majority"] == pytest.approx(1 / k, abs=0.01), accuracies
    assert abs(accuracies["base"] - 1 / k) <= NEAR_CHANCE, accuracies


@pytest.fixture(scope="module")
def wide_t5_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The ``tiny-t5-wide`` random model (its tokenizer trained on the real PQA-L), built once."""
    out = tmp_path_factory.mktemp("tiny_t5_wide") / "model"
    write_random_model("tiny-t5-wide", out, shared_data / "ori_pqal.json", seed=0, prompt_stats=False)
    return out


@pytest.fixture(scope="module")
def sanity_runs(tmp_path_factory: pytest.TempPathFactory, wide_t5_dir: Path, shared_data: Path):
    """``k -> metrics/eval.json`` of the sanity run with K labels, each run once, on first use."""
    runs: dict[int, dict] = {}

    def get(k: int) -> dict:
        if k not in runs:
            labels = ("yes", "no", "maybe")[:k]
            root = tmp_path_factory.mktemp(f"sanity_k{k}")
            runs[k] = sanity_run(root, wide_t5_dir, shared_data / "ori_pqal.json", labels)
        return runs[k]

    return get


@pytest.mark.parametrize("k", [2, 3])
def test_majority_is_one_in_k_and_base_stays_near_chance(sanity_runs, k):
    _assert_baselines(sanity_runs(k), k)


@pytest.mark.parametrize("method", registry.names())
@pytest.mark.parametrize("k", [2, 3])
def test_every_trained_method_answers_from_the_planted_cue(sanity_runs, k, method):
    accuracies = _accuracies(sanity_runs(k))
    assert accuracies[method] >= BAR[k], accuracies


@pytest.mark.parametrize("method", registry.names())
@pytest.mark.parametrize("k", [2, 3])
def test_every_trained_method_ranks_by_the_planted_cue(sanity_runs, k, method):
    doc = sanity_runs(k)
    aucs = {m: doc["test"][m]["roc_auc"] for m in ("base", *registry.names())}
    assert aucs[method] >= 0.95, aucs
