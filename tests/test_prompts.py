"""Tests of the prompt template, its chat-template form, and fitting prompts to the token budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pubmedqa_peft import modeling, scoring
from pubmedqa_peft.causal_scoring import encode_pair
from pubmedqa_peft.prompts import LABELS, as_chat, fit_prompt_encoded, format_fewshot_prompt, format_prompt, uses_chat
from pubmedqa_peft.training import encode_examples

LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
"""A template that writes BOS into the text, as Llama-3-Instruct's does."""


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    """The tiny Qwen2 tokenizer (it ships Qwen2.5-Instruct's chat template) and its directory."""
    directory = str(tiny_model_dir("tiny-qwen2"))
    return modeling.load_tokenizer(directory), directory


def test_auto_uses_the_template_only_where_the_tokenizer_has_one(qwen, tiny_model_dir, tiny_t5_dir):
    tokenizer, _ = qwen
    assert uses_chat(tokenizer, "auto") and not uses_chat(tokenizer, "none")
    for plain in (str(tiny_t5_dir), str(tiny_model_dir("tiny-gpt2"))):
        assert not uses_chat(modeling.load_tokenizer(plain), "auto")
    with pytest.raises(ValueError, match="chat_template"):
        uses_chat(tokenizer, "always")


def test_the_prompt_is_the_user_turn_and_ends_at_the_assistant_header(qwen):
    tokenizer, _ = qwen
    text = as_chat(tokenizer, [format_prompt("Q?", "C.")])
    assert "<|im_start|>user\nQuestion: Q?\nContext: C.\nAnswer the question with yes or no.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_a_template_that_writes_bos_gets_exactly_one(tiny_model_dir):
    tokenizer = modeling.load_tokenizer(str(tiny_model_dir("tiny-llama")))
    assert tokenizer("x").input_ids[0] == tokenizer.bos_token_id  # this tokenizer adds BOS itself
    tokenizer.chat_template = LLAMA3_STYLE
    ids = tokenizer(as_chat(tokenizer, ["hello"])).input_ids
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_chat_prompts_fit_the_budget_by_cutting_the_context_only(qwen, pqal_rows):
    tokenizer, _ = qwen
    row = max(pqal_rows[:20], key=lambda r: len(r["context"]))
    full = fit_prompt_encoded(tokenizer, row["question"], row["context"], 4096, row["id"], chat=True)
    fitted = fit_prompt_encoded(tokenizer, row["question"], row["context"], 120, row["id"], chat=True)
    assert len(fitted.input_ids) <= 120 < len(full.input_ids)
    assert fitted.input_ids == tokenizer(fitted.text).input_ids
    assert fitted.text.startswith(as_chat(tokenizer, [format_prompt(row["question"], "")]).split("Context:")[0])
    assert fitted.text.endswith("yes or no.<|im_end|>\n<|im_start|>assistant\n")
    # The plain prompt of the same record is not a chat.
    plain = fit_prompt_encoded(tokenizer, row["question"], row["context"], 120, row["id"])
    assert "<|im_start|>" not in plain.text


def test_fewshot_exemplars_become_earlier_turns_answered_by_the_assistant(qwen):
    tokenizer, _ = qwen
    shots = [{"question": "q1", "context": "c1", "label": "yes"}, {"question": "q2", "context": "c2", "label": "no"}]
    text = format_fewshot_prompt(shots, "q", "c", tokenizer, chat=True)
    assert text.count("<|im_start|>user") == 3
    assert "<|im_start|>assistant\nyes<|im_end|>" in text and "<|im_start|>assistant\nno<|im_end|>" in text
    assert text.endswith(as_chat(tokenizer, [format_prompt("q", "c")]).split("<|im_end|>\n")[-1])
    assert "<|im_start|>" not in format_fewshot_prompt(shots, "q", "c")


def test_a_chat_training_example_is_the_answer_right_after_the_header_then_eos(qwen, pqal_rows):
    tokenizer, directory = qwen
    family = modeling.load_family(directory)
    rows = pqal_rows[:4]
    features = encode_examples(tokenizer, rows, 160, "rows", family, chat=True).features
    for f, row in zip(features, rows, strict=True):
        assert len(f["input_ids"]) <= 160
        n_prompt = f["labels"].count(-100)
        answer = f["input_ids"][n_prompt:]
        assert f["labels"][n_prompt:] == answer and answer[-1] == tokenizer.eos_token_id
        # No space: the answer word follows the assistant header's newline.
        assert tokenizer.decode(answer[:-1]) == "\n" + row["label"]
        assert tokenizer.decode(f["input_ids"][:n_prompt]).endswith("<|im_start|>assistant")


def test_chat_scores_are_the_harness_loglikelihood_of_the_bare_answer(qwen, pqal_rows):
    tokenizer, directory = qwen
    model = modeling.load_base_model(directory, torch.device("cpu"))
    texts = [
        fit_prompt_encoded(tokenizer, r["question"], r["context"], 96, r["id"], chat=True).text for r in pqal_rows[:3]
    ]
    got = scoring.score_yes_no(model, tokenizer, texts, 2, 96, progress=False, chat=True)
    want = np.zeros_like(got)
    with torch.inference_mode():
        for i, text in enumerate(texts):
            for j, label in enumerate(LABELS):
                context, cont = encode_pair(tokenizer, text, label)
                logits = model(input_ids=torch.tensor([[*context, *cont]])).logits[0, -len(cont) - 1 : -1]
                want[i, j] = torch.log_softmax(logits.float(), -1)[torch.arange(len(cont)), torch.tensor(cont)].sum()
    assert np.abs(got - want).max() < 1e-4
    # Without the chat flag the answers carry a leading space: other continuations, other scores.
    plain = scoring.score_yes_no(model, tokenizer, texts, 2, 96, progress=False)
    assert np.abs(plain - got).max() > 1e-3
