"""The usual way of evaluating yes/no questions with a seq2seq model: the benchmark's reference.

Every input padded to 512 tokens, ``generate(max_new_tokens=10)`` in batches of 8 and
the answer parsed from the generated text, with stock transformers: this file does not
import ``pubmedqa_peft``. ``benchmarks/speed.py`` runs it in a fresh process::

    python benchmarks/reference.py MODEL_DIR TEXTS.json   # prints one JSON line

The model's output head is restricted to the two answer words (:func:`answer_only_head`)
so that a random-weight model writes parseable answers; the matmul shapes, and so the
cost, are unchanged.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

MAX_LEN = 512
BATCH = 8
NEW_TOKENS = 10
ANSWERS = ("no", "yes")


def answer_only_head(model: Any, tokenizer: Any) -> None:
    """Make the output head answer only yes or no, in place (same shapes, so same cost).

    Every row but the answers' first tokens is zero and ``no`` = -``yes``, so one of the
    two always has the largest logit: ``generate()`` then writes parseable answers.
    """
    no_id, yes_id = (tokenizer(text_target=a).input_ids[0] for a in ANSWERS)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        yes = head[yes_id].clone()
        head.zero_()
        head[yes_id] = yes
        head[no_id] = -yes


def parse_answer(text: str) -> str | None:
    """The answer in generated text the way such projects parse it: its first word, if yes/no."""
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words and words[0] in ANSWERS else None


def generate_answers(model: Any, tokenizer: Any, texts: list[str]) -> tuple[list[str | None], float, int]:
    """Pad to 512, generate 10 tokens in batches of 8, parse: (answers, seconds, generated tokens)."""
    preds: list[str | None] = []
    new_tokens = 0
    start = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        enc = tokenizer(
            texts[i : i + BATCH], padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt"
        )
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1)
        new_tokens += int((out[:, 1:] != tokenizer.pad_token_id).sum())
        preds += [parse_answer(t) for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return preds, time.perf_counter() - start, new_tokens


def load(model_dir: str) -> tuple[Any, Any]:
    """Tokenizer and answer-only model from a local directory, the stock way."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    answer_only_head(model, tokenizer)
    return tokenizer, model


def main() -> None:
    model_dir, texts_file = sys.argv[1:3]
    with open(texts_file, encoding="utf-8") as f:
        texts = json.load(f)
    tokenizer, model = load(model_dir)
    generate_answers(model, tokenizer, texts[:BATCH])  # warm-up, not timed
    preds, seconds, new_tokens = generate_answers(model, tokenizer, texts)
    print(
        json.dumps({"preds": preds, "seconds": seconds, "new_tokens": new_tokens, "threads": torch.get_num_threads()})
    )


if __name__ == "__main__":
    main()
