"""Scoring yes/no answers by their likelihood under a seq2seq model, and timing it.

Each answer is scored the way lm-evaluation-harness scores multiple choice on an
encoder-decoder model: the answer's target tokens (``tokenizer(text_target=...)``, so
T5's end-of-sequence token is included) are teacher-forced through the decoder and
their log-probabilities summed. Nothing assumes an answer is one token, and ``yes``
and ``no`` may differ in length. Sums are not length-normalised (the harness's
``acc``), so with a tokenizer where the answers differ in length the shorter one has
an edge; on T5's tokenizer both are one word piece plus ``</s>``.

Cost per batch of ``b`` prompts, instead of ``generate()``'s step-by-step decoding
(measured in ``benchmarks/speed.py``):

1. ONE forward of the whole model over the ``b`` prompts with only the decoder-start
   token. It encodes every prompt once (through any PEFT wrapper, so a soft prompt is
   prepended as in training), projects the encoder states into every decoder layer's
   cross-attention keys/values (kept in the decoder cache) and gives the distribution
   of every answer's first token.
2. The candidates' remaining tokens, on top of step 1's cache: the encoder is not run
   again and the cross-attention keys/values are not projected again. Large batches
   take ONE decoder pass per candidate over the ``b`` rows, cutting the cache back to
   the start token after each, so nothing of size ``prompt length`` is copied. Small
   batches (batch-1 latency) take ONE pass over ``b x candidates`` rows with the cache
   repeated, because there the copy moves less memory than reading the decoder's
   weights once more per candidate (:func:`_one_pass_is_cheaper`).

Prefix tuning replaces the decoder cache with its own prefixes, so there step 1 runs
only the encoder (the prefixes do not touch it) and each candidate's pass feeds its
full target. ``reuse_encoder=False`` is the generic fallback for a wrapper that accepts
neither ``encoder_outputs`` nor a cache: the model encodes the prompt once per
candidate. All ways give the same numbers as a naive loop over examples and candidates
(tested in ``tests/test_scoring.py`` and ``tests/test_speed_equivalence.py``).

Prompts are sorted by token length so that each batch is padded only to its own
longest prompt (dynamic padding); results come back in input order.

On a CPU with ``t`` torch threads, ``t`` batches are scored at once, each on one thread
(:func:`cpu_workers`), instead of one batch at a time with every operator split over
``t`` threads: a T5 forward is hundreds of operators of a few milliseconds, and
splitting each one costs a synchronisation of the threads every time. Each batch then
runs single-threaded kernels, so the numbers do not depend on the thread count
(bit-identical for 1, 2 or 16 threads), and memory holds ``t`` batches' activations.
A single batch (batch-1 latency) keeps all threads on it.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np
import torch
from scipy.special import expit, softmax
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutput

from pubmedqa_peft.prompts import LABELS, verbalize

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each mixed precision (``evaluate.precision`` resolved by
:func:`pubmedqa_peft.modeling.resolve_precision`)."""


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context a scoring forward runs in for ``precision`` (``fp32``, ``bf16`` or ``fp16``).

    ``fp32`` is no context at all, so float32 scores are bit-identical to code that never
    heard of precision. Weights stay float32; autocast runs matmuls in the lower
    precision, and log-softmax is taken in float32 either way. Autocast state is per
    thread: it is entered in the thread that runs the batch.

    Args:
        device: Where the model runs.
        precision: A resolved precision.

    Returns:
        ``torch.autocast`` with the precision's dtype, or a null context for fp32.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; allowed: fp32, {', '.join(AUTOCAST_DTYPES)}")
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


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


def answer_token_ids(tokenizer: Any, labels: Sequence[str] = LABELS) -> list[list[int]]:
    """Target token ids of each answer, in ``labels`` order.

    Args:
        tokenizer: A Hugging Face tokenizer.
        labels: The task's labels in column order (default: yes/no).

    Returns:
        One list of ids per label, as the model is trained to produce them (with EOS).

    Raises:
        ValueError: If an answer tokenizes to nothing.
    """
    targets = [list(tokenizer(text_target=verbalize(label)).input_ids) for label in labels]
    for label, ids in zip(labels, targets, strict=True):
        if not ids:
            raise ValueError(f"answer {label!r} tokenizes to no tokens")
    return targets


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _strategy(model: Any, reuse_encoder: bool) -> str:
    """How to share work between the candidates of a prompt (see the module docstring)."""
    if not reuse_encoder:
        return "duplicate"
    config = getattr(model, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return "cache"  # plain or LoRA: the forward takes our own cache
    peft_type = getattr(config, "peft_type", None)  # PeftType is a str enum
    if peft_type in ("PROMPT_TUNING", "P_TUNING"):
        return "cache"  # the soft prompt only changes the encoder input
    if peft_type == "PREFIX_TUNING":
        return "prefix"  # prefixes replace past_key_values but leave the encoder alone
    return "encoder"  # other prompt learning: unknown effect on the encoder, so run it through the wrapper


def _logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of ``labels`` (``(t,)``, the same for every row) under ``logits`` ``(b, t, V)``."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    index = labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)
    return logprobs.gather(-1, index).squeeze(-1).sum(dim=-1)


def _score_batch(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: Sequence[torch.Tensor],
    start_id: int,
    strategy: str,
) -> torch.Tensor:
    """Summed log-likelihood of each candidate for each prompt: shape (prompts, candidates)."""
    b = input_ids.shape[0]
    start = torch.full((b, 1), start_id, dtype=torch.long, device=input_ids.device)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}

    def full_target(t: torch.Tensor) -> torch.Tensor:
        # Teacher forcing: the decoder reads the start token and all but the last target token.
        return torch.cat([start, t[:-1].expand(b, -1)], dim=1)

    if strategy == "duplicate":
        return torch.stack(
            [_logprobs(model(**inputs, decoder_input_ids=full_target(t), use_cache=False).logits, t) for t in targets],
            dim=1,
        )

    if strategy == "prefix":
        encoder = model.get_base_model().get_encoder()
        hidden = BaseModelOutput(last_hidden_state=encoder(**inputs).last_hidden_state)
        first = None
    else:
        first = model(**inputs, decoder_input_ids=start, use_cache=strategy == "cache")
        hidden = BaseModelOutput(last_hidden_state=first.encoder_last_hidden_state)
    cache = first.past_key_values if first is not None and strategy == "cache" else None
    if cache is None or not hasattr(cache, "crop"):
        # No usable cache (prefix tuning, or a model that returns none): feed each full target.
        scores = []
        for t in targets:
            out = model(**inputs, encoder_outputs=hidden, decoder_input_ids=full_target(t), use_cache=False)
            scores.append(_logprobs(out.logits, t))
        return torch.stack(scores, dim=1)

    # Step 1 predicted every candidate's first token; its cache holds the start token and
    # the cross-attention keys/values of the prompts, shared by all candidates.
    head = torch.log_softmax(first.logits[:, 0].float(), dim=-1)
    scores = torch.stack([head[:, t[0]] for t in targets], dim=1)
    if max(len(t) for t in targets) == 1:
        return scores
    source_len = hidden.last_hidden_state.shape[1]
    if hasattr(cache, "batch_repeat_interleave") and _one_pass_is_cheaper(model.config, b, source_len, len(targets)):
        return scores + _rest_in_one_pass(model, inputs, hidden, cache, targets)
    for j, t in enumerate(targets):
        if len(t) > 1:
            out = model(
                **inputs,
                encoder_outputs=hidden,
                decoder_input_ids=t[:-1].expand(b, -1),
                past_key_values=cache,
                use_cache=True,
            )
            scores[:, j] += _logprobs(out.logits, t[1:])
            cache.crop(-(len(t) - 1))  # back to the start token only, for the next candidate
    return scores


def _one_pass_is_cheaper(config: Any, rows: int, source_len: int, candidates: int) -> bool:
    """Whether to feed all candidates in one decoder pass (cache repeated) rather than one pass each.

    Both are memory-bound at these sizes (a few tokens per row), so compare the floats
    moved: repeating the cache copies every decoder layer's cross-attention keys and
    values once more per extra candidate; a pass per candidate reads the decoder's and
    the output head's weights once more instead. Small batches (batch-1 latency) take
    the first way, large ones the second. Configs without T5's sizes take the second.
    """
    names = ("num_decoder_layers", "num_heads", "d_kv", "d_model", "d_ff", "vocab_size")
    if candidates < 2 or not all(isinstance(getattr(config, n, None), int) for n in names):
        return False
    inner = config.num_heads * config.d_kv
    copied = rows * source_len * 2 * config.num_decoder_layers * inner
    # Per decoder layer: self-attention q, k, v, o; cross-attention q, o; the (gated) feed-forward.
    layer = 6 * config.d_model * inner + 3 * config.d_model * config.d_ff
    reread = config.vocab_size * config.d_model + config.num_decoder_layers * layer
    return copied < reread


def _rest_in_one_pass(
    model: Any, inputs: dict[str, torch.Tensor], hidden: BaseModelOutput, cache: Any, targets: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Log-likelihood of every candidate's tokens after the first, all candidates in one pass."""
    b, k = inputs["input_ids"].shape[0], len(targets)
    width = max(len(t) for t in targets) - 1
    device = inputs["input_ids"].device
    # Right-padded; the decoder is causal, so a shorter candidate never sees the padding after it.
    feed = torch.zeros((k, width), dtype=torch.long, device=device)
    labels = torch.zeros((k, width), dtype=torch.long, device=device)
    keep = torch.zeros((k, width), dtype=torch.bool, device=device)
    for j, t in enumerate(targets):
        n = len(t) - 1
        feed[j, :n], labels[j, :n], keep[j, :n] = t[:-1], t[1:], True
    # Rows: prompt 0 with candidate 0, 1, ..., prompt 1 with candidate 0, ...
    cache.batch_repeat_interleave(k)
    out = model(
        **{name: x.repeat_interleave(k, dim=0) for name, x in inputs.items()},
        encoder_outputs=BaseModelOutput(last_hidden_state=hidden.last_hidden_state.repeat_interleave(k, dim=0)),
        decoder_input_ids=feed.repeat(b, 1),
        past_key_values=cache,
        use_cache=True,
    )
    logprobs = torch.log_softmax(out.logits.float(), dim=-1)
    picked = logprobs.gather(-1, labels.repeat(b, 1).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~keep.repeat(b, 1), 0.0).sum(dim=-1).view(b, k)


def encode_prompts(tokenizer: Any, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Token ids of prompts given as texts, or the ids themselves if already tokenized.

    Args:
        tokenizer: The model's tokenizer.
        prompts: All texts, or all token-id sequences (e.g.
            :attr:`~pubmedqa_peft.prompts.FittedPrompt.input_ids`), which are not tokenized again.

    Returns:
        One list of ids per prompt.

    Raises:
        TypeError: If texts and id sequences are mixed.
    """
    texts = [isinstance(p, str) for p in prompts]
    if all(texts):
        return [list(ids) for ids in tokenizer(list(prompts)).input_ids] if prompts else []
    if any(texts):
        raise TypeError("prompts must be all texts or all token-id sequences, not a mix")
    return [list(p) for p in prompts]


def score_yes_no(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    batch_size: int,
    max_length: int,
    *,
    reuse_encoder: bool = True,
    progress: bool = True,
    desc: str = "scoring",
    chat: bool = False,
    labels: Sequence[str] = LABELS,
    precision: str = "fp32",
) -> np.ndarray:
    """Log-likelihood of each answer for each prompt.

    Prompts are tokenized once (or not at all if given as ids), sorted by length so
    that each batch is padded only to its own longest prompt, scored, and returned in
    the original order. The numbers do not depend on ``batch_size`` or on padding (up
    to float rounding, ~1e-6).

    Args:
        model: A seq2seq LM (``T5ForConditionalGeneration``) or a PEFT model wrapping one
            (LoRA, prompt tuning, prefix tuning); put in eval mode here.
        tokenizer: Its tokenizer.
        prompts: Prompt texts, already fitted to ``max_length`` (see
            :func:`~pubmedqa_peft.prompts.fit_prompt`), or their token ids (see
            :func:`~pubmedqa_peft.prompts.fit_prompts_encoded`) to skip tokenizing again.
        batch_size: Prompts per batch.
        max_length: Token budget of a prompt; longer prompts are refused rather than
            silently cut, because cutting would drop the trailing instruction.
        reuse_encoder: Encode each prompt once and share its encoder states (and, where
            the model allows, its decoder cache) between the answers (default);
            ``False`` encodes the prompt once per answer, for wrappers that accept
            neither ``encoder_outputs`` nor a cache.
        progress: Show a tqdm bar over batches.
        desc: Label of the progress bar.
        chat: The prompts went through a chat template (a decoder-only model's answer then
            follows them with no space; see :func:`pubmedqa_peft.families.answer_delimiter`).
        labels: The answers to score, in column order (default: ``("no", "yes")``; the
            three-label task adds ``maybe``).
        precision: ``fp32`` (default, bit-identical to scoring without autocast), or
            ``bf16`` / ``fp16`` to run the forward passes under :func:`autocast`.

    Returns:
        Array of shape ``(len(prompts), K)``: ``[log P(no), log P(yes)]`` per prompt for
        the default labels, one column per label in ``labels`` order in general.

    Raises:
        ValueError: If ``batch_size`` < 1 or a prompt is longer than ``max_length`` tokens.
        TypeError: If ``prompts`` mixes texts and token ids.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(prompts)
    if n == 0:
        return np.zeros((0, len(labels)), dtype=np.float64)
    if is_causal(model):
        return _score_causal(model, tokenizer, prompts, batch_size, max_length, progress, desc, chat, labels, precision)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token")
    encoded = encode_prompts(tokenizer, prompts)
    lengths = np.array([len(ids) for ids in encoded])
    too_long = np.flatnonzero(lengths > max_length)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(
            f"{too_long.size} prompt(s) longer than max_length={max_length} tokens, "
            f"e.g. prompt {i} has {lengths[i]}; fit prompts with prompts.fit_prompt first"
        )
    device = _device(model)
    targets = [torch.tensor(t, dtype=torch.long, device=device) for t in answer_token_ids(tokenizer, labels)]
    start_id = _decoder_start_id(model)
    # Longest first: the biggest batch runs first, so running out of memory shows at once.
    order = np.argsort(-lengths, kind="stable")
    out = np.empty((n, len(labels)), dtype=np.float64)
    model.eval()
    strategy = _strategy(model, reuse_encoder)
    starts = range(0, n, batch_size)
    log.debug("scoring %d prompts in %d batches of <= %d (%s)", n, len(starts), batch_size, strategy)
    batches = [order[s : s + batch_size] for s in starts]

    def score(idx: np.ndarray) -> np.ndarray:
        # inference_mode and autocast are per thread, so each batch enters them in the thread that runs it.
        with torch.inference_mode(), autocast(device, precision):
            ids, mask = _pad([encoded[i] for i in idx], pad_id)
            scores = _score_batch(model, ids.to(device), mask.to(device), targets, start_id, strategy)
            return scores.double().cpu().numpy()

    with tqdm(total=len(batches), desc=desc, disable=not progress, unit="batch") as bar:
        for idx, scores in _run_batches(score, batches, cpu_workers(device, len(batches))):
            out[idx] = scores
            bar.update()
    return out


def is_causal(model: Any) -> bool:
    """Whether ``model`` (or the model a PEFT wrapper holds) is decoder-only."""
    return not getattr(getattr(model, "config", None), "is_encoder_decoder", False)


def _score_causal(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    batch_size: int,
    max_length: int,
    progress: bool,
    desc: str,
    chat: bool = False,
    labels: Sequence[str] = LABELS,
    precision: str = "fp32",
) -> np.ndarray:
    """:func:`score_yes_no` for a decoder-only model: each answer as the continuation of its prompt."""
    # Imported here: causal_scoring builds on this module's batch runner.
    from pubmedqa_peft.causal_scoring import encode_requests, score_answers_causal
    from pubmedqa_peft.families import answer_delimiter

    answers = [answer_delimiter(chat) + verbalize(label) for label in labels]
    texts = [isinstance(p, str) for p in prompts]
    if any(texts) and not all(texts):
        raise TypeError("prompts must be all texts or all token-id sequences, not a mix")
    if all(texts):
        # Encoded once here (prompt alone and with each answer) and scored as they are.
        prompts = encode_requests(tokenizer, prompts, answers)  # type: ignore[arg-type]
        lengths = [len(r.context) for r in prompts]
    else:
        lengths = [len(ids) for ids in prompts]
    if max(lengths) > max_length:
        i = int(np.argmax(lengths))
        raise ValueError(
            f"prompt {i} has {lengths[i]} tokens, more than max_length={max_length}; fit it with prompts.fit_prompt"
        )
    return score_answers_causal(
        model, tokenizer, prompts, answers, batch_size, progress=progress, desc=desc, precision=precision
    )


def cpu_workers(device: torch.device, batches: int) -> int:
    """How many batches :func:`score_yes_no` scores at once: one per torch thread on a CPU.

    Args:
        device: Where the model is.
        batches: Number of batches to score.

    Returns:
        ``min(torch.get_num_threads(), batches)`` on a CPU, else 1.
    """
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), batches))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the ``with`` block with ``n`` torch CPU threads; the previous count is restored after.

    Args:
        n: Thread count inside the block.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_batches(
    score: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray], workers: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(batch, score(batch))`` for every batch: in order on one worker, as finished on several.

    Several workers are threads (torch releases the GIL inside operators) that each run
    single-threaded operators; torch's thread count is restored afterwards. A failing
    batch cancels the batches not yet started and re-raises.
    """
    if workers == 1:
        for idx in batches:
            yield idx, score(idx)
        return
    with torch_threads(1):
        # Threads of our own start with OpenMP's default team size; set each one to 1 too.
        pool = ThreadPoolExecutor(
            workers, thread_name_prefix="scoring", initializer=torch.set_num_threads, initargs=(1,)
        )
        try:
            futures = {pool.submit(score, idx): i for i, idx in enumerate(batches)}
            for future in as_completed(futures):
                yield batches[futures[future]], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def probabilities(loglik: np.ndarray) -> np.ndarray:
    """Probabilities from the answers' log-likelihoods: a softmax over the task's answers.

    Args:
        loglik: Array ``(n, K)`` as returned by :func:`score_yes_no`.

    Returns:
        For yes/no (``K = 2``, columns ``[no, yes]``): array ``(n,)`` of P(yes) in [0, 1].
        For ``K > 2``: array ``(n, K)`` whose rows sum to 1, columns as in ``loglik``.
    """
    loglik = np.asarray(loglik, dtype=np.float64)
    if loglik.ndim != 2 or loglik.shape[1] < 2:
        raise ValueError(f"expected shape (n, K) with K >= 2, got {loglik.shape}")
    if loglik.shape[1] == 2:
        # softmax([a, b])[1] == sigmoid(b - a); expit never overflows.
        return expit(loglik[:, LABELS.index("yes")] - loglik[:, LABELS.index("no")])
    return softmax(loglik, axis=1)


def measure_latency(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    samples: int,
    warmup: int,
    max_length: int,
    chat: bool = False,
    labels: Sequence[str] = LABELS,
    precision: str = "fp32",
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
        chat: The prompts went through a chat template (see :func:`score_yes_no`).
        labels: The answers scored (see :func:`score_yes_no`).
        precision: Scoring precision (see :func:`score_yes_no`).

    Returns:
        ``{"median": s, "p90": s, "samples": n}`` in seconds per request.
    """
    if not prompts or samples < 1:
        raise ValueError("need at least one prompt and one timed sample")
    for i in range(warmup):
        score_yes_no(
            model,
            tokenizer,
            [prompts[i % len(prompts)]],
            1,
            max_length,
            progress=False,
            chat=chat,
            labels=labels,
            precision=precision,
        )
    times = []
    for i in range(samples):
        prompt = prompts[(warmup + i) % len(prompts)]
        start = time.perf_counter()
        score_yes_no(
            model, tokenizer, [prompt], 1, max_length, progress=False, chat=chat, labels=labels, precision=precision
        )
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
