"""The usual ways of scoring yes/no with a decoder-only model: the references of ``decoder.py``.

Stock transformers only: this file never imports ``pubmedqa_peft``, so none of the
pipeline's settings or code paths touch it. ``benchmarks/decoder.py`` starts it as a
worker process and sends it one JSON request per line on stdin::

    python benchmarks/decoder_reference.py MODEL_DIR
    {"op": "generate", "texts": [...]}                       # -> RESULT {"preds": [...], ...}
    {"op": "loglik", "texts": [...], "answers": [" no", " yes"], "group": false}

The ways:

* ``generate``: what PubMedQA fine-tuning projects usually do. Every prompt left-padded
  to 512 tokens, ``generate(max_new_tokens=10)`` greedy in batches of 8, the answer
  parsed from the new text (its first word, if yes/no).
* ``loglik`` with ``group: false``: lm-evaluation-harness's ``loglikelihood`` on a causal
  model, one full forward per (prompt, answer): context and continuation encoded together
  and split at the context's length, the sequence ``(context + continuation)[:-1]``
  right-padded in batches of 8 sorted longest first, the whole ``(batch, length,
  vocabulary)`` logits and their log-softmax, no cache.
* ``loglik`` with ``group: true``: the same, but requests whose continuation is one token
  and whose context is the same share one forward, as the harness does when its
  ``logits_cache`` is on (its default since 0.4.3; it groups by context +
  continuation[:-1]).

Every reply carries the wall time of the work and the peak resident memory while doing
it (``VmHWM``, reset before each request through ``/proc/self/clear_refs``; it includes
the resident model).

The model's output head is restricted to the answers' first tokens
(:func:`answer_only_head`) so that a random-weight model generates parseable answers;
the shapes, and so the cost, are unchanged.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from reference import BATCH, MAX_LEN, NEW_TOKENS, parse_answer
from transformers import AutoModelForCausalLM, AutoTokenizer

RESULT = "RESULT "
"""Prefix of the reply line on stdout (libraries may print other lines)."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak_rss`, MB."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 2**10 if match else float("nan")


def reset_peak_rss() -> None:
    """Start a new peak: Linux resets ``VmHWM`` to the current RSS when ``5`` is written here."""
    with contextlib.suppress(OSError):  # not Linux: the peak then covers the whole process
        Path("/proc/self/clear_refs").write_text("5")


def answer_first_tokens(tokenizer: Any, answers: list[str]) -> list[int]:
    """The token each answer starts with when it follows a prompt (``" yes"`` -> ``Ġyes``)."""
    return [tokenizer(a, add_special_tokens=False).input_ids[0] for a in answers]


def answer_only_head(model: Any, token_ids: list[int]) -> None:
    """Make the output head produce only the first of ``token_ids`` or the second, in place.

    Every row but theirs is zero and the second is minus the first, so one of the two
    always has the largest logit and ``generate()`` writes parseable answers. A head tied
    to the input embeddings (Qwen2.5, GPT-2) is untied first, so the inputs stay as they
    were; the matmul shapes are unchanged.
    """
    first, second = token_ids
    with torch.no_grad():
        head = model.get_output_embeddings()
        if head.weight is model.get_input_embeddings().weight:
            head.weight = torch.nn.Parameter(head.weight.detach().clone())
        keep = head.weight[first].clone()
        head.weight.zero_()
        head.weight[first] = keep
        head.weight[second] = -keep
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()


def load(model_dir: str) -> tuple[Any, Any]:
    """Tokenizer (EOS as pad if it has none) and float32 model, the stock way."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).eval()
    return tokenizer, model


def generate_answers(model: Any, tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    """Left-pad to 512, generate 10 tokens greedily in batches of 8, parse the first word."""
    preds: list[str | None] = []
    new_tokens = 0
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
    for i in range(0, len(texts), BATCH):
        enc = tokenizer(
            texts[i : i + BATCH], padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id
            )
        new = out[:, enc.input_ids.shape[1] :]
        new_tokens += new.numel()
        preds += [parse_answer(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return {"preds": preds, "new_tokens": new_tokens}


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The harness's split: trailing spaces move to the continuation; encode both, split at the context."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation).input_ids
    context_ids = tokenizer(context).input_ids
    return context_ids, whole[len(context_ids) :]


def loglik(model: Any, tokenizer: Any, texts: list[str], answers: list[str], group: bool) -> dict[str, Any]:
    """lm-evaluation-harness's causal ``loglikelihood``: one forward per request (or per group)."""
    requests = [(i, j, *encode_pair(tokenizer, t, a)) for i, t in enumerate(texts) for j, a in enumerate(answers)]
    # One forward per request; with `group`, single-token continuations of one context share one.
    runs: dict[tuple[int, ...], list[tuple[int, int, list[int], list[int]]]] = {}
    for r in requests:
        key = tuple(r[2] + r[3][:-1]) if group else (r[0], r[1])
        runs.setdefault(key, []).append(r)
    order = sorted(runs.values(), key=lambda g: -(len(g[0][2]) + len(g[0][3])))
    out = [[0.0] * len(answers) for _ in texts]
    forwards = 0
    for s in range(0, len(order), BATCH):
        chunk = order[s : s + BATCH]
        seqs = [(g[0][2] + g[0][3])[:-1] for g in chunk]
        width = max(len(q) for q in seqs)
        # Right padding and no mask, as the harness's HFLM: the model is causal, so a
        # sequence never sees the padding after it.
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
        for row, q in enumerate(seqs):
            ids[row, : len(q)] = torch.tensor(q)
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(ids).logits.float(), dim=-1)
        forwards += len(seqs)
        for row, g in enumerate(chunk):
            for i, j, context, continuation in g:
                start = len(context) - 1
                picked = logprobs[row, start : start + len(continuation)].gather(
                    -1, torch.tensor(continuation).unsqueeze(-1)
                )
                out[i][j] = float(picked.sum())
    return {"loglik": out, "forwards": forwards}


def serve(model_dir: str, answers: list[str]) -> None:
    """Load once, then answer one JSON request per stdin line with one ``RESULT`` line."""
    tokenizer, model = load(model_dir)
    answer_only_head(model, answer_first_tokens(tokenizer, answers))
    print(RESULT + json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        reset_peak_rss()
        start = time.perf_counter()
        if request["op"] == "generate":
            reply = generate_answers(model, tokenizer, request["texts"])
        else:
            reply = loglik(model, tokenizer, request["texts"], request["answers"], request["group"])
        reply.update(seconds=time.perf_counter() - start, peak_rss_mb=peak_rss_mb())
        print(RESULT + json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]))
