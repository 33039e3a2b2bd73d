"""Tests of the baselines on generated records and a word-level tokenizer trained in the test."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from pubmedqa_peft import baselines
from pubmedqa_peft.evaluation import accuracy, predict
from pubmedqa_peft.prompts import format_fewshot_prompt

WORDS = [
    "cell",
    "dose",
    "risk",
    "trial",
    "mice",
    "gene",
    "rate",
    "age",
    "blood",
    "tumour",
    "serum",
    "level",
    "cohort",
    "patients",
    "outcome",
]


def _rows(n: int, seed: int = 0, yes_share: float = 0.6, words: tuple[int, int] = (20, 120)) -> list[dict]:
    """Records whose label shows in the context (``increased`` vs ``unchanged``), amid noise words."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "yes" if rng.random() < yes_share else "no"
        cue = " ".join(["increased" if label == "yes" else "unchanged"] * 3)
        noise = " ".join(rng.choice(WORDS, size=int(rng.integers(*words))))
        question = f"Does {' '.join(rng.choice(WORDS, size=3))} change the outcome?"
        rows.append(
            {"id": f"{seed}-{i:04d}", "question": question, "context": f"{noise} {cue} {noise}", "label": label}
        )
    return rows


def _word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def train_rows() -> list[dict]:
    return _rows(120, seed=1)


@pytest.fixture(scope="module")
def tokenizer(train_rows) -> PreTrainedTokenizerFast:
    texts = [format_fewshot_prompt([r], r["question"], r["context"]) for r in train_rows]
    return _word_tokenizer(texts)


def test_majority_is_the_train_prior():
    p = baselines.majority_p_yes(["yes", "yes", "no", "yes", "no"], n=4)
    assert p.tolist() == [0.6] * 4
    assert predict(p).tolist() == [1] * 4
    assert predict(baselines.majority_p_yes([0, 0, 0, 1], n=2)).tolist() == [0, 0]
    assert predict(baselines.majority_p_yes(["yes", "no"], n=1)).tolist() == [0]  # 50/50 tie -> no


def test_tfidf_is_deterministic_and_learns_a_clear_signal(train_rows):
    test = _rows(60, seed=2)
    p1 = baselines.tfidf_logreg_p_yes(train_rows, test, seed=0)
    p2 = baselines.tfidf_logreg_p_yes(train_rows, test, seed=0)
    assert np.array_equal(p1, p2)
    assert p1.shape == (60,) and np.all((p1 >= 0) & (p1 <= 1))
    assert accuracy([r["label"] for r in test], p1) >= 0.9


def test_tfidf_fit_predict_and_parameter_count(train_rows):
    test = _rows(15, seed=5)
    model = baselines.fit_tfidf_logreg(train_rows, seed=0)
    p = baselines.predict_tfidf_logreg(model, test)
    assert np.array_equal(p, baselines.tfidf_logreg_p_yes(train_rows, test, seed=0))
    # One request at a time gives the same numbers as the batch.
    one_by_one = np.concatenate([baselines.predict_tfidf_logreg(model, [r]) for r in test])
    np.testing.assert_allclose(one_by_one, p, rtol=0, atol=1e-12)
    n_features = len(model.named_steps["tfidf"].vocabulary_)
    assert baselines.tfidf_logreg_parameters(model) == n_features + 1
    assert baselines.predict_tfidf_logreg(model, []).shape == (0,)


def test_tfidf_never_reads_evaluation_labels(train_rows):
    test = _rows(10, seed=3)
    unlabeled = [{k: v for k, v in r.items() if k != "label"} for r in test]
    flipped = [{**r, "label": "no" if r["label"] == "yes" else "yes"} for r in test]
    p = baselines.tfidf_logreg_p_yes(train_rows, unlabeled, seed=0)
    assert np.array_equal(p, baselines.tfidf_logreg_p_yes(train_rows, flipped, seed=0))


def test_tfidf_needs_both_classes():
    rows = [r for r in _rows(30) if r["label"] == "yes"]
    with pytest.raises(ValueError, match="examples of every label"):
        baselines.tfidf_logreg_p_yes(rows, rows, seed=0)


@pytest.mark.parametrize(("k", "yes", "no"), [(1, 1, 0), (3, 2, 1), (4, 2, 2), (5, 3, 2)])
def test_exemplars_are_balanced_with_the_extra_one_from_the_majority(train_rows, k, yes, no):
    shots = baselines.choose_exemplars(train_rows, k, seed=42)
    assert Counter(s["label"] for s in shots) == Counter({"yes": yes, "no": no}) - Counter()
    assert len({s["id"] for s in shots}) == k


def test_exemplars_are_deterministic_and_independent_of_row_order(train_rows):
    ids = [s["id"] for s in baselines.choose_exemplars(train_rows, 5, seed=42)]
    reordered = list(reversed(train_rows))
    assert [s["id"] for s in baselines.choose_exemplars(reordered, 5, seed=42)] == ids
    assert [s["id"] for s in baselines.choose_exemplars(train_rows, 5, seed=43)] != ids


def test_exemplars_refuse_too_small_a_class(train_rows):
    few = [r for r in train_rows if r["label"] == "yes"] + [r for r in train_rows if r["label"] == "no"][:1]
    with pytest.raises(ValueError, match="need 2 'no'"):
        baselines.choose_exemplars(few, 4, seed=0)


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text).input_ids)


@pytest.mark.parametrize("k", [3, 5])
def test_fewshot_prompts_fit_the_budget_and_keep_questions(train_rows, tokenizer, k):
    shots = baselines.choose_exemplars(train_rows, k, seed=42)
    rows = _rows(8, seed=4, words=(150, 200))
    max_length = 400
    prompts = baselines.fewshot_prompts(tokenizer, shots, rows, max_length)
    assert len(prompts) == len(rows)
    for row, prompt in zip(rows, prompts, strict=True):
        untouched = format_fewshot_prompt(shots, row["question"], row["context"])
        assert _n_tokens(tokenizer, untouched) > max_length, "precondition: the full prompt is too long"
        assert _n_tokens(tokenizer, prompt) <= max_length
        assert _n_tokens(tokenizer, prompt) >= max_length - 5, "the budget is used, not wasted"
        for s in shots:
            assert f"Question: {s['question']}" in prompt
        assert prompt.count("Answer the question with yes or no.") == k + 1
        assert prompt.rstrip().endswith(
            f"Question: {row['question']}\nContext: {_query_context(prompt)}\nAnswer the question with yes or no."
        )
        # The query's context is cut, but it keeps the larger share.
        contexts = _contexts(prompt)
        assert row["context"].startswith(contexts[-1]) and contexts[-1] != row["context"]
        assert len(contexts[-1].split()) > max(len(c.split()) for c in contexts[:-1])
    answers = [line.rsplit(" ", 1)[-1] for line in prompts[0].split("\n") if line.startswith("Answer")][:-1]
    assert Counter(answers) == Counter(s["label"] for s in shots)


def _contexts(prompt: str) -> list[str]:
    return [line.removeprefix("Context: ") for line in prompt.split("\n") if line.startswith("Context: ")]


def _query_context(prompt: str) -> str:
    return _contexts(prompt)[-1]


def test_short_prompts_are_left_whole(train_rows, tokenizer):
    shots = [{**s, "context": "cell dose"} for s in baselines.choose_exemplars(train_rows, 3, seed=0)]
    row = {"id": "q", "question": "Does age matter?", "context": "blood serum level"}
    (prompt,) = baselines.fewshot_prompts(tokenizer, shots, [row], 512)
    assert prompt == format_fewshot_prompt(shots, row["question"], row["context"])


def test_a_short_query_context_leaves_its_tokens_to_the_exemplars(train_rows, tokenizer):
    shots = baselines.choose_exemplars(train_rows, 3, seed=0)
    row = {"id": "q", "question": "Does age matter?", "context": "blood"}
    (prompt,) = baselines.fewshot_prompts(tokenizer, shots, [row], 300)
    assert _query_context(prompt) == "blood"
    assert 300 - 5 <= _n_tokens(tokenizer, prompt) <= 300


def test_fewshot_refuses_a_budget_smaller_than_the_questions(train_rows, tokenizer):
    shots = baselines.choose_exemplars(train_rows, 5, seed=0)
    with pytest.raises(ValueError, match="record q: the 5-shot prompt without contexts"):
        baselines.fewshot_prompts(tokenizer, shots, [{"id": "q", "question": "Does age matter?", "context": "x"}], 40)


def test_tfidf_settings_are_chosen_on_val_and_beat_the_majority_on_real_test_data(pqal_rows):
    from pubmedqa_peft import evaluation
    from pubmedqa_peft.splits import stratified_split

    split = stratified_split(pqal_rows, {"train": 0.8, "val": 0.1, "test": 0.1}, 42)
    model, choice = baselines.choose_tfidf_logreg(split["train"], split["val"], seed=42)
    assert (choice["C"], choice["class_weight"]) in baselines.TFIDF_GRID
    y_val = [r["label"] for r in split["val"]]
    assert choice["val_macro_f1"] == evaluation.macro_f1(y_val, baselines.predict_tfidf_logreg(model, split["val"]))
    # Each other setting, fitted the same way, does no better on val.
    for C, weight in baselines.TFIDF_GRID:
        other = baselines.fit_tfidf_logreg(split["train"], 42, C=C, class_weight=weight)
        assert evaluation.macro_f1(y_val, baselines.predict_tfidf_logreg(other, split["val"])) <= choice["val_macro_f1"]
    y_test = [r["label"] for r in split["test"]]
    majority = evaluation.macro_f1(y_test, baselines.majority_p_yes([r["label"] for r in split["train"]], len(y_test)))
    chosen = evaluation.macro_f1(y_test, baselines.predict_tfidf_logreg(model, split["test"]))
    assert chosen > majority + 0.15, (chosen, majority)  # measured: 0.588 vs 0.382


def test_tfidf_choice_is_deterministic(train_rows):
    val = train_rows[:30]
    a, choice_a = baselines.choose_tfidf_logreg(train_rows[30:], val, seed=0)
    b, choice_b = baselines.choose_tfidf_logreg(train_rows[30:], val, seed=0)
    assert choice_a == choice_b
    test = _rows(20, seed=9)
    assert np.array_equal(baselines.predict_tfidf_logreg(a, test), baselines.predict_tfidf_logreg(b, test))


# --- three labels ---------------------------------------------------------------------------------

THREE = ("no", "yes", "maybe")


def test_three_label_majority_gives_every_label_its_training_share():
    p = baselines.majority_p_yes(["yes", "yes", "no", "maybe", "yes", "no"], 4, THREE)
    assert p.shape == (4, 3) and np.allclose(p[0], [2 / 6, 3 / 6, 1 / 6])


def test_three_label_tfidf_gives_a_probability_row_per_example_in_column_order():
    rows = _rows(60)
    for i, r in enumerate(rows):
        if i % 4 == 0:
            r["label"] = "maybe"
    model, choice = baselines.choose_tfidf_logreg(rows[:45], rows[45:], seed=0, labels=THREE)
    p = baselines.predict_tfidf_logreg(model, rows[45:])
    assert p.shape == (15, 3) and np.allclose(p.sum(axis=1), 1)
    assert model.classes_.tolist() == [0, 1, 2] and set(choice) == {"C", "class_weight", "val_macro_f1"}
    with pytest.raises(ValueError, match="every label"):
        baselines.fit_tfidf_logreg([r for r in rows if r["label"] != "maybe"], seed=0, labels=THREE)


def test_three_label_exemplars_are_balanced_with_the_rest_to_the_commonest():
    rows = [{"id": f"{i:03d}", "label": lab} for i, lab in enumerate(["yes"] * 9 + ["no"] * 6 + ["maybe"] * 3)]
    for k, want in (
        (3, {"yes": 1, "no": 1, "maybe": 1}),
        (5, {"yes": 2, "no": 2, "maybe": 1}),
        (4, {"yes": 2, "no": 1, "maybe": 1}),
    ):
        picked = baselines.choose_exemplars(rows, k, seed=1, labels=THREE)
        assert {lab: sum(r["label"] == lab for r in picked) for lab in want} == want
    # The binary choice is unchanged: ceil(k/2) from the majority.
    binary = [r for r in rows if r["label"] != "maybe"]
    assert sum(r["label"] == "yes" for r in baselines.choose_exemplars(binary, 3, seed=1)) == 2
