"""The decoder-only speed benchmark: its stock references score what ours scores, and a smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pubmedqa_peft import modeling, scoring
from pubmedqa_peft.causal_scoring import score_answers_causal
from pubmedqa_peft.prompts import LABELS, fit_prompts_encoded

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import decoder_reference as ref  # noqa: E402

ANSWERS = [" no", " yes"]


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-qwen2"])
def test_reference_ways_match_ours_and_generate_matches_the_argmax(
    arch: str, tiny_model_dir: Callable[[str], Path], pqal_rows: list[dict]
) -> None:
    model_dir = tiny_model_dir(arch)
    tokenizer, model = ref.load(str(model_dir))
    ours_tokenizer = modeling.load_tokenizer(str(model_dir))
    texts = [p.text for p in fit_prompts_encoded(ours_tokenizer, pqal_rows[:3], 510, "pqal")]
    # One thread: these ops are tiny, and two threads on a busy machine only wait for each other.
    with scoring.torch_threads(1):
        ours = score_answers_causal(model, ours_tokenizer, texts, ANSWERS, 2, progress=False)
        for group in (False, True):
            theirs = ref.loglik(model, tokenizer, texts, ANSWERS, group)
            assert theirs["forwards"] == len(texts) * (1 if group else 2)  # " no", " yes": one token each
            np.testing.assert_allclose(theirs["loglik"], ours, atol=1e-4, rtol=0)

        embeddings = model.get_input_embeddings().weight.detach().clone()
        ref.answer_only_head(model, ref.answer_first_tokens(tokenizer, ANSWERS))
        assert torch.equal(model.get_input_embeddings().weight, embeddings)  # a tied head is untied first
        scores = score_answers_causal(model, ours_tokenizer, texts, ANSWERS, 3, progress=False)
        generated = ref.generate_answers(model, tokenizer, texts)
    assert generated["preds"] == [LABELS[i] for i in scores.argmax(axis=1)]
    assert generated["new_tokens"] == 10 * len(texts)


@pytest.mark.e2e
def test_quick_run_writes_results_that_pass_its_checks(
    tiny_model_dir: Callable[[str], Path], shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "decoder.json"
    args = ["--quick", "--model-dir", str(tiny_model_dir("tiny-llama")), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "decoder.py"), *args], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    s, checks, t = doc["scoring"], doc["scoring"]["checks"], doc["training"]
    assert set(s["examples_per_s"]) == {"ours", "generate", "per_answer", "grouped"}
    assert all(v > 0 for v in s["examples_per_s"].values())
    assert s["reference_forwards_per_rep"] == {"per_answer": 8, "grouped": 4}
    assert max(checks["max_abs_loglik_diff_per_answer"], checks["max_abs_loglik_diff_grouped"]) <= 1e-4
    n = checks["prompts"]
    assert n == checks["argmax_agree_per_answer"] == checks["argmax_agree_grouped"] == checks["generate_agree"]
    # Dynamic padding pads far less than padding to 512, over a whole epoch too.
    assert t["ours"]["padding_share"] < t["padded512"]["padding_share"]
    assert max(t["epoch_padding_share"].values()) < 0.10
    assert t["ours"]["real_tokens_per_s"] > 0 and t["padded512"]["peak_rss_mb"] > 0
    assert "| a. scoring: ours" in (tmp_path / "decoder.md").read_text() in proc.stdout
