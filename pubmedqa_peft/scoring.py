"""Scoring yes/no answers by their likelihood under a seq2seq model, and timing it.

Each answer is scored the way lm-evaluation-harness scores multiple choice on an
encoder-decoder model: the answer's target tokens (``tokenizer(text_target=...)``, so
T5's end-of-sequence token is included) are teacher-forced through the decoder and
their log-probabilities summed. Nothing assumes an answer is one token, and ``yes``
and ``no`` may differ in length. Sums are not length-normalised (the harness's
``acc``), so with a tokenizer where the answers differ in length the shorter one has
an edge; on T5's tokenizer both are one word piece plus ``</s>``.

Cost per batch of ``b`` prompts, instead of ``generate()``'s step-by-step decoding:

1. ONE forward of the whole model over the ``b`` prompts with only the decoder-start
   token. It encodes every prompt once (through any PEFT wrapper, so a soft prompt is
   prepended as in training) and gives the distribution of every answer's first token.
2. ONE decoder pass over ``2b`` rows: both candidates of every prompt stacked, the
   encoder states repeated as ``encoder_outputs`` so the encoder is not run again.
   For plain, LoRA and prompt-tuning models the decoder cache of step 1 is repeated
   too, so the cross-attention keys/values of the prompt are projected once per
   prompt, not once per candidate, and the candidates only feed their remaining
   tokens. Prefix tuning replaces the decoder cache with its own prefixes, so there
   step 2 feeds the candidates' full targets instead (still without re-encoding).

``reuse_encoder=False`` is the generic fallback for a wrapper that accepts neither
``encoder_outputs`` nor a cache: it duplicates every prompt's row and lets the model
encode it once per candidate. All ways give the same numbers as a naive loop over
examples and candidates (tested).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutput

from pubmedqa_peft.prompts import LABELS, verbalize

log = logging.getLogger(__name__)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _decoder_start_id(model: Any) -> int:
    config = model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(config, "pad_token_id", None)
    if start is None:
        raise ValueError("the model config has neither decoder_start_token_id nor pad_token_id")
    return int(start)


def answer_token_ids(tokenizer: Any) -> list[list[int]]:
    """Target token ids of each answer, in :data:`~pubmedqa_peft.prompts.LABELS` order.

    Args:
        tokenizer: A Hugging Face tokenizer.

    Returns:
        One list of ids per label, as the model is trained to produce them (with EOS).

    Raises:
        ValueError: If an answer tokenizes to nothing.
    """
    targets = [list(tokenizer(text_target=verbalize(label)).input_ids) for label in LABELS]
    for label, ids in zip(LABELS, targets, strict=True):
        if not ids:
            raise ValueError(f"answer {label!r} tokenizes to no tokens")
    return targets


def _candidates(targets: list[list[int]], pad_id: int, start_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded labels, decoder inputs (labels shifted right) and mask of the candidates."""
    width = max(len(t) for t in targets)
    labels = torch.full((len(targets), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(targets), width), dtype=torch.bool)
    for i, ids in enumerate(targets):
        labels[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = True
    decoder_in = torch.full_like(labels, pad_id)
    decoder_in[:, 0] = start_id
    decoder_in[:, 1:] = labels[:, :-1]
    # Padding sits after each target and the decoder is causal, so a shorter
    # candidate's scores never see the padding that follows it.
    return labels, decoder_in, mask


def _pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _strategy(model: Any, reuse_encoder: bool) -> str:
    """How to share work between the two candidates of a prompt (see the module docstring)."""
    if not reuse_encoder:
        return "duplicate"
    config = getattr(model, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return "cache"  # plain or LoRA: the forward takes our own cache
    if getattr(config, "peft_type", None) == "PROMPT_TUNING":  # PeftType is a str enum
        return "cache"  # the soft prompt only changes the encoder input
    return "encoder"  # prefix tuning & co. replace past_key_values with their own prefixes


def _gather(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probability of each label token, 0 where ``mask`` is False."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~mask, 0.0)


def _score_batch(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cand: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    strategy: str,
) -> torch.Tensor:
    """Summed log-likelihood of each candidate for each prompt: shape (prompts, candidates)."""
    labels, decoder_in, cand_mask = cand
    b, k = input_ids.shape[0], labels.shape[0]
    # Decoder rows are (prompt 0: cand 0, cand 1, prompt 1: cand 0, ...).
    rows = {
        "input_ids": input_ids.repeat_interleave(k, dim=0),
        "attention_mask": attention_mask.repeat_interleave(k, dim=0),
    }
    row_labels, row_mask = labels.repeat(b, 1), cand_mask.repeat(b, 1)
    if strategy == "duplicate":
        out = model(**rows, decoder_input_ids=decoder_in.repeat(b, 1), use_cache=False)
        return _gather(out.logits, row_labels, row_mask).sum(dim=-1).view(b, k)

    # One pass of the whole model with only the decoder-start token: it encodes the
    # prompts once (through any PEFT wrapper) and predicts every answer's first token.
    start = decoder_in[:1, :1].expand(b, 1)
    first = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=start,
        use_cache=strategy == "cache",
    )
    hidden = BaseModelOutput(last_hidden_state=first.encoder_last_hidden_state.repeat_interleave(k, dim=0))
    cache = first.past_key_values if strategy == "cache" else None
    if cache is not None and hasattr(cache, "batch_repeat_interleave"):
        # Reuse that pass's decoder cache, whose cross-attention keys/values already
        # hold the projected encoder states: the candidates only add their own tokens.
        head = torch.log_softmax(first.logits[:, 0].float(), dim=-1)[:, labels[:, 0]]  # (b, k)
        total = head.masked_fill(~cand_mask[:, 0], 0.0).reshape(-1)
        if labels.shape[1] > 1:
            cache.batch_repeat_interleave(k)
            out = model(
                **rows,
                encoder_outputs=hidden,
                decoder_input_ids=decoder_in[:, 1:].repeat(b, 1),
                past_key_values=cache,
                use_cache=True,
            )
            total = total + _gather(out.logits, row_labels[:, 1:], row_mask[:, 1:]).sum(dim=-1)
        return total.view(b, k)
    # No usable cache (prefix tuning, or a model that returns none): feed the full targets.
    out = model(**rows, encoder_outputs=hidden, decoder_input_ids=decoder_in.repeat(b, 1), use_cache=False)
    return _gather(out.logits, row_labels, row_mask).sum(dim=-1).view(b, k)


def score_yes_no(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int,
    max_length: int,
    *,
    reuse_encoder: bool = True,
    progress: bool = True,
    desc: str = "scoring",
) -> np.ndarray:
    """Log-likelihood of each answer for each prompt.

    Prompts are tokenized once, sorted by length so that each batch is padded only to
    its own longest prompt, scored, and returned in the original order. The numbers do
    not depend on ``batch_size`` (up to float rounding, ~1e-6).

    Args:
        model: A seq2seq LM (``T5ForConditionalGeneration``) or a PEFT model wrapping one
            (LoRA, prompt tuning, prefix tuning); put in eval mode here.
        tokenizer: Its tokenizer.
        prompts: Prompt texts, already fitted to ``max_length`` (see
            :func:`~pubmedqa_peft.prompts.fit_prompt`).
        batch_size: Prompts per batch (the decoder sees twice as many rows).
        max_length: Token budget of a prompt; longer prompts are refused rather than
            silently cut, because cutting would drop the trailing instruction.
        reuse_encoder: Encode each prompt once and share its encoder states (and, where
            the model allows, its decoder cache) between both answers (default);
            ``False`` encodes the prompt once per answer, for wrappers that accept
            neither ``encoder_outputs`` nor a cache.
        progress: Show a tqdm bar over batches.
        desc: Label of the progress bar.

    Returns:
        Array of shape ``(len(prompts), 2)``: ``[log P(no), log P(yes)]`` per prompt
        (column order :data:`~pubmedqa_peft.prompts.LABELS`).

    Raises:
        ValueError: If ``batch_size`` < 1 or a prompt is longer than ``max_length`` tokens.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(prompts)
    if n == 0:
        return np.zeros((0, len(LABELS)), dtype=np.float64)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token")
    encoded = tokenizer(list(prompts)).input_ids
    lengths = np.array([len(ids) for ids in encoded])
    too_long = np.flatnonzero(lengths > max_length)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(
            f"{too_long.size} prompt(s) longer than max_length={max_length} tokens, "
            f"e.g. prompt {i} has {lengths[i]}; fit prompts with prompts.fit_prompt first"
        )
    device = _device(model)
    cand = tuple(t.to(device) for t in _candidates(answer_token_ids(tokenizer), pad_id, _decoder_start_id(model)))
    # Longest first: the biggest batch runs first, so running out of memory shows at once.
    order = np.argsort(-lengths, kind="stable")
    out = np.empty((n, len(LABELS)), dtype=np.float64)
    model.eval()
    strategy = _strategy(model, reuse_encoder)
    starts = range(0, n, batch_size)
    log.debug("scoring %d prompts in %d batches of <= %d (%s)", n, len(starts), batch_size, strategy)
    with torch.inference_mode():
        for s in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
            idx = order[s : s + batch_size]
            ids, mask = _pad([encoded[i] for i in idx], pad_id)
            scores = _score_batch(model, ids.to(device), mask.to(device), cand, strategy)
            out[idx] = scores.double().cpu().numpy()
    return out


def probabilities(loglik: np.ndarray) -> np.ndarray:
    """P(yes) from the two answers' log-likelihoods: a softmax over the two.

    Args:
        loglik: Array ``(n, 2)`` as returned by :func:`score_yes_no`.

    Returns:
        Array ``(n,)`` of P(yes) in [0, 1].
    """
    loglik = np.asarray(loglik, dtype=np.float64)
    if loglik.ndim != 2 or loglik.shape[1] != len(LABELS):
        raise ValueError(f"expected shape (n, {len(LABELS)}), got {loglik.shape}")
    # softmax([a, b])[1] == sigmoid(b - a); expit never overflows.
    return expit(loglik[:, LABELS.index("yes")] - loglik[:, LABELS.index("no")])


def measure_latency(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    samples: int,
    warmup: int,
    max_length: int,
) -> dict[str, float]:
    """Wall-clock seconds of batch-1 requests: tokenization plus scoring of one prompt.

    Requests cycle through ``prompts``; the ``warmup`` first ones are not timed (they
    pay one-off costs such as allocator growth and kernel selection).

    Args:
        model: The model to time.
        tokenizer: Its tokenizer.
        prompts: Prompt texts (fitted to ``max_length``).
        samples: Timed requests.
        warmup: Untimed requests before timing.
        max_length: Token budget of a prompt.

    Returns:
        ``{"median": s, "p90": s, "samples": n}`` in seconds per request.
    """
    if not prompts or samples < 1:
        raise ValueError("need at least one prompt and one timed sample")
    for i in range(warmup):
        score_yes_no(model, tokenizer, [prompts[i % len(prompts)]], 1, max_length, progress=False)
    times = []
    for i in range(samples):
        prompt = prompts[(warmup + i) % len(prompts)]
        start = time.perf_counter()
        score_yes_no(model, tokenizer, [prompt], 1, max_length, progress=False)
        times.append(time.perf_counter() - start)
    return {
        "median": float(statistics.median(times)),
        "p90": float(np.percentile(times, 90)),
        "samples": samples,
    }


def measure_throughput(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int,
    max_length: int,
) -> float:
    """Examples per second of batched scoring (tokenization included).

    One untimed batch runs first so that one-off costs do not count.

    Args:
        model: The model to time.
        tokenizer: Its tokenizer.
        prompts: Prompt texts (fitted to ``max_length``).
        batch_size: Prompts per batch.
        max_length: Token budget of a prompt.

    Returns:
        ``len(prompts)`` divided by the seconds one :func:`score_yes_no` call took.
    """
    if not prompts:
        raise ValueError("need at least one prompt")
    score_yes_no(model, tokenizer, prompts[:batch_size], batch_size, max_length, progress=False)
    start = time.perf_counter()
    score_yes_no(model, tokenizer, prompts, batch_size, max_length, progress=False)
    return len(prompts) / (time.perf_counter() - start)
