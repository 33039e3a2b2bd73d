"""Scoring answers by their likelihood under a decoder-only (causal) language model.

Each answer is scored the way lm-evaluation-harness scores multiple choice on a causal
model (``loglikelihood``): the prompt is the context, the answer with its leading space
(``" yes"``) the continuation; the two are encoded TOGETHER and split at the token length
of the context encoded alone (:func:`encode_pair`, which documents the harness's rules),
and the score is the sum of the log-probabilities of the continuation's tokens, each
given the prompt and the answer's tokens before it. Sums are not length-normalised (the
harness's ``acc``): on the tiny tokenizers ``" yes"`` and ``" no"`` are one token and
``" maybe"`` three, so ``maybe`` pays for three. BOS is whatever the tokenizer adds (Llama's
``<|begin_of_text|>``, Mistral's ``<s>``, BioGPT's ``</s>``; none for GPT-2 and Qwen2), as
recent harness versions do (older ones encoded causal-model inputs without special tokens
unless ``add_bos_token=True``).

Cost per batch of ``b`` prompts and ``K`` answers, instead of ``K`` forwards over prompt +
answer (:func:`_score_full`, kept as the fallback and as ``reuse_prompt=False``):

1. ONE forward over the ``b`` prompts with the cache kept (``use_cache=True``). The logits
   at each prompt's last token give every answer's first token; ``logits_to_keep`` limits
   the vocabulary projection to those positions (a ``(b, prompt length, vocabulary)``
   tensor would otherwise be the biggest of the pass). When every answer is one token
   (``" yes"``/``" no"`` on all five tiny tokenizers), that is all: one forward per batch.
2. Otherwise the answers' remaining tokens (2 or 3 per row here) go on top of that cache,
   in whichever of two ways moves fewer bytes (:func:`_one_pass_is_cheaper`): ONE pass over
   every (prompt, multi-token answer) pair, the prompt's cache rows gathered once per pair;
   or one pass per such answer over the ``b`` rows, the cache cut back to the prompt after
   each (``crop``). The arithmetic is the same; the first copies cache rows, the second
   reads the weights and pays a forward's fixed overhead once per answer. Measured on this
   CPU, one thread, the answers' part alone (``" yes"``, ``" no"``, ``" maybe"``,
   ``" not applicable"``)::

       model                      prompt  batch   one pass   pass per answer   rule picks
       tiny-llama (0.6 M)           96      1      2.0 ms        3.5 ms        one pass
                                    96      8      3.8 ms        5.0 ms        one pass
                                    96     32     12.0 ms       10.2 ms        per answer
                                   400      8      6.1 ms        6.4 ms        per answer
                                   400     32     21.8 ms       17.7 ms        per answer
       tiny-gpt2 (0.4 M)            96      8      3.8 ms        4.8 ms        one pass
                                   400     32     23.2 ms       17.5 ms        per answer
       Llama 27 M (8 layers,        96      1     26.0 ms       41.6 ms        one pass
         hidden 512, GQA 8/2)       96     32    256 ms        229 ms          one pass
                                   400      8    138 ms        133 ms          one pass

   The rule picks the faster way except near break-even (within 11% there). With real
   sizes the weights dominate (TinyLlama-1.1B: 2.2 GB of bf16 weights against 22.5 kB of
   cache per token), so one pass is chosen up to ~50 k prompt tokens per batch.

Either way step 2 is small next to step 1: on tiny-llama with 400-token prompts in batches
of 32, scoring the four answers took 308 ms against 1579 ms for four full forwards.

Padding (dynamic: prompts sorted by length, each batch padded to its own longest, results
in input order): right or left, same numbers. Position ids count real tokens only
(``cumsum(mask) - 1``), so left padding shifts no position (GPT-2 and BioGPT have learned
absolute positions); the answer tokens get positions ``prompt length + t`` and an
attention mask over every cache slot, so with right padding they skip the pad slots that
sit between their prompt and them.

PEFT wrappers:

* LoRA, IA3, DoRA (no prompt learning): the wrapper's forward is the base model's with
  adapted layers; called as it is for both steps.
* Prompt tuning (and P-tuning): the wrapper prepends ``num_virtual_tokens`` embeddings, so
  step 1 goes through it and its logits are read from the END (they are longer by the
  virtual tokens). PEFT ignores position ids here and left padding would put the virtual
  tokens before the padding, so prompt tuning always pads right (any ``padding_side``).
  Step 2 calls the base model on the cache (the wrapper would prepend the soft prompt
  again), with the virtual tokens counted in positions and mask.
* Prefix tuning: the wrapper builds a cache holding the prefixes and adds their length to
  the position ids; step 1 goes through it, step 2 calls the base model on the returned
  cache (prefixes + prompt), as ``generate`` does after its first step.
* Any other prompt-learning method, a cache without ``crop``/``batch_select_indices``, or a
  sliding attention window shorter than prompt + answer (such a cache drops slots):
  one plain forward per answer through the wrapper, right-padded.

All ways give the numbers of a naive loop (one example, one answer, no padding, no cache)
within 1e-5 on the five tiny architectures and through LoRA, prompt and prefix tuning
(``tests/test_causal_scoring.py``). Batches run in parallel on a CPU as in
:mod:`pubmedqa_peft.scoring` (one batch per torch thread, single-threaded kernels).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pubmedqa_peft.scoring import _run_batches, autocast, cpu_workers

log = logging.getLogger(__name__)

PADDING_SIDES = ("right", "left")
"""Where :func:`score_answers_causal` may pad a batch of prompts."""


@dataclass(frozen=True)
class CausalRequest:
    """One prompt ready to score: its token ids and each answer's continuation ids.

    ``context + continuations[j]`` is exactly the sequence the model reads for answer
    ``j``, and the sum of the log-probabilities of ``continuations[j]`` is its score.
    Build it with :func:`encode_requests` (or :func:`encode_pair`).
    """

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


# --- tokenization: lm-evaluation-harness's split ----------------------------------------------


def _encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """``tokenizer(text).input_ids`` for each text, as the harness's ``HFLM.tok_encode``.

    The tokenizer's own special tokens are added (its BOS where it has one), except to a
    text that already starts with the BOS token's text (e.g. a chat-templated prompt),
    which would otherwise get two; the harness guards the same way. ``verbose=False``:
    a prompt longer than ``model_max_length`` is the caller's business, not a warning here.
    """
    texts = list(texts)
    bos = getattr(tokenizer, "bos_token", None)
    has_bos = [bool(bos) and t.startswith(bos) for t in texts]
    out: list[list[int]] = [[] for _ in texts]
    for special in (True, False):
        idx = [i for i, h in enumerate(has_bos) if h != special]
        if idx:
            enc = tokenizer([texts[i] for i in idx], add_special_tokens=special, verbose=False).input_ids
            for i, ids in zip(idx, enc, strict=True):
                out[i] = list(ids)
    return out


def _prefix_token_id(tokenizer: Any) -> int:
    """The token that stands for an empty context: BOS, else EOS (the harness's ``prefix_token_id``)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("an empty context needs a BOS or EOS token, and the tokenizer has neither")
    return int(token)


def _split_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the front of the continuation, as the harness does."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces == 0:
        return context, continuation
    return context[:-n_spaces], context[-n_spaces:] + continuation


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids, split the way lm-evaluation-harness does for causal models.

    The harness (``TemplateLM._encode_pair`` and ``loglikelihood``):

    1. An empty context becomes the prefix token alone (BOS, else EOS) and the
       continuation is encoded on its own (with the tokenizer's special tokens, so a
       tokenizer that adds BOS puts one in the continuation too: the harness's quirk).
    2. Otherwise trailing whitespace of the context moves to the front of the
       continuation, so ``"...no. "`` + ``"yes"`` is scored as ``"...no."`` + ``" yes"``.
    3. ``context + continuation`` is encoded as ONE text and so is the context alone;
       the continuation is the joint encoding from index ``len(context alone)`` on.

    Step 3 lets the tokenizer see the answer's leading space together with the answer,
    as it would in running text (``" yes"`` is one token ``Ġyes`` in byte-level BPE).
    When the joint encoding changes the context's own tokens, the split still happens at
    the length of the context alone, and the model then reads ``context alone +
    continuation``, which is not the joint encoding. BioGPT's Moses tokenizer does
    this: it splits the prompt's final ``"no."`` into ``no</w>`` ``.</w>`` alone, but keeps
    ``no.`` one word (``no`` ``.</w>``, no word end after ``no``) when a lowercase word
    follows, so the joint encoding has the same length and the continuation is just
    ``yes</w>``. Had the joint encoding come out
    shorter, tokens of the context would leak into (or vanish from) the continuation:
    that is the harness's behaviour too, kept for comparable numbers.

    Args:
        tokenizer: A Hugging Face tokenizer (its special tokens are added as it adds them).
        context: The prompt text.
        continuation: The answer text, usually with a leading space (``" yes"``).

    Returns:
        ``(context_ids, continuation_ids)``.

    Raises:
        ValueError: If the continuation gets no tokens of its own (the harness asserts it).
    """
    if context == "":
        context_ids, continuation_ids = [_prefix_token_id(tokenizer)], _encode(tokenizer, [continuation])[0]
    else:
        context, continuation = _split_trailing_whitespace(context, continuation)
        whole, context_ids = _encode(tokenizer, [context + continuation, context])
        continuation_ids = whole[len(context_ids) :]
    if not continuation_ids:
        raise ValueError(f"continuation {continuation!r} gets no tokens of its own after its context")
    return context_ids, continuation_ids


def encode_requests(
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    context_ids: Sequence[Sequence[int]] | None = None,
) -> list[CausalRequest]:
    """:func:`encode_pair` for every prompt and answer, with batched tokenizer calls.

    Args:
        tokenizer: A Hugging Face tokenizer.
        prompts: Prompt texts (the contexts).
        answers: Answer texts, e.g. ``(" no", " yes")``; the same for every prompt.
        context_ids: The prompts' ids if already computed (e.g.
            :attr:`~pubmedqa_peft.prompts.FittedPrompt.input_ids`, which are
            ``tokenizer(text).input_ids``), so the contexts are not encoded again; only
            the joint texts are. Not for prompts ending in whitespace (the harness
            encodes those without it).

    Returns:
        One :class:`CausalRequest` per prompt, continuations in ``answers`` order.

    Raises:
        ValueError: If ``answers`` is empty, ``context_ids`` does not match ``prompts``,
            or an answer gets no tokens of its own after a prompt.
    """
    if not answers:
        raise ValueError("no answers to score")
    if context_ids is not None:
        if len(context_ids) != len(prompts):
            raise ValueError(f"{len(context_ids)} context_ids for {len(prompts)} prompts")
        if any(p != p.rstrip() or p == "" for p in prompts):
            raise ValueError("context_ids cannot stand for an empty prompt or one ending in whitespace")
    # Every prompt's texts in one batched call: the fast tokenizers encode a batch in parallel.
    split = [_split_trailing_whitespace(p, "") for p in prompts]
    joint = [ctx + moved + answer for ctx, moved in split for answer in answers]
    whole = _encode(tokenizer, joint)
    if context_ids is None:
        contexts = _encode(tokenizer, [ctx for ctx, _ in split])
    else:
        contexts = [list(ids) for ids in context_ids]
    k = len(answers)
    requests = []
    for i, prompt in enumerate(prompts):
        if prompt == "":
            context, conts = [_prefix_token_id(tokenizer)], _encode(tokenizer, answers)
        else:
            context = contexts[i]
            conts = [ids[len(context) :] for ids in whole[i * k : (i + 1) * k]]
        for answer, ids in zip(answers, conts, strict=True):
            if not ids:
                raise ValueError(f"answer {answer!r} gets no tokens of its own after prompt {i}")
        requests.append(CausalRequest(tuple(context), tuple(tuple(ids) for ids in conts)))
    return requests


def _added_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts in front of every text (BOS, BioGPT's ``</s>``), maybe none."""
    return list(tokenizer("", verbose=False).input_ids)


def _requests_from_ids(
    tokenizer: Any, prompt_ids: Sequence[Sequence[int]], answers: Sequence[str]
) -> list[CausalRequest]:
    """Requests for prompts given as ids: their text is decoded, and must encode back to the same ids."""
    prefix = _added_prefix(tokenizer)
    texts = []
    for ids in prompt_ids:
        ids = list(ids)
        # The tokenizer adds its prefix again when the text is encoded, so decode without it.
        body = ids[len(prefix) :] if prefix and ids[: len(prefix)] == prefix else ids
        texts.append(tokenizer.decode(body, skip_special_tokens=False))
    requests = encode_requests(tokenizer, texts, answers)
    for i, (ids, request) in enumerate(zip(prompt_ids, requests, strict=True)):
        if list(request.context) != list(ids):
            raise ValueError(
                f"prompt {i}'s ids do not encode back to themselves after decoding, so the answers' "
                "split cannot be recovered; pass the prompt texts, or CausalRequests from encode_requests"
            )
    return requests


def _as_requests(
    tokenizer: Any, prompts: Sequence[str] | Sequence[Sequence[int]] | Sequence[CausalRequest], answers: Sequence[str]
) -> list[CausalRequest]:
    """Prompts of any accepted kind as :class:`CausalRequest` (see :func:`score_answers_causal`)."""
    kinds = {"request" if isinstance(p, CausalRequest) else "text" if isinstance(p, str) else "ids" for p in prompts}
    if len(kinds) > 1:
        raise TypeError("prompts must be all texts, all token-id sequences or all CausalRequests, not a mix")
    kind = kinds.pop()
    if kind == "text":
        return encode_requests(tokenizer, prompts, answers)
    if kind == "ids":
        return _requests_from_ids(tokenizer, prompts, answers)
    requests = list(prompts)
    for i, request in enumerate(requests):
        if len(request.continuations) != len(answers) or not all(request.continuations):
            raise ValueError(f"request {i} has {len(request.continuations)} continuations for {len(answers)} answers")
    return requests


# --- scoring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How a model is called: the PEFT method's effect on inputs, cache and positions, and its size."""

    method: str
    """``plain`` (no prompt learning: LoRA, IA3, ...), ``prompt`` (virtual input tokens),
    ``prefix`` (virtual keys/values in the cache) or ``other`` (unknown: no cache reuse)."""
    virtual: int
    """Cache slots in front of the prompt's: the soft prompt's or the prefix's length."""
    keeps_logits: bool
    """The model's forward accepts ``logits_to_keep``."""
    weight_bytes: int
    """Bytes of the parameters, what one more forward reads (see :func:`_one_pass_is_cheaper`)."""
    window: int | None
    """The sliding attention window, if the model has one."""


def _plan(model: Any) -> _Plan:
    config = getattr(model, "active_peft_config", None)
    method, virtual = "plain", 0
    if config is not None and getattr(config, "is_prompt_learning", False):
        peft_type = getattr(config, "peft_type", None)  # PeftType is a str enum
        virtual = int(config.num_virtual_tokens)
        if peft_type in ("PROMPT_TUNING", "P_TUNING"):
            method = "prompt"
        elif peft_type == "PREFIX_TUNING":
            method = "prefix"
        else:
            method, virtual = "other", 0
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    keeps = "logits_to_keep" in inspect.signature(base.forward).parameters
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    base_config = base.config
    window = getattr(base_config, "sliding_window", None)
    if not isinstance(window, int) or not getattr(base_config, "use_sliding_window", True):
        window = None  # Qwen2 keeps a sliding_window value it does not use
    return _Plan(method, virtual, keeps, weight_bytes, window)


def _pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask of ``seqs`` padded to the longest, on ``side``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[i, cols] = torch.tensor(s, dtype=torch.long)
            mask[i, cols] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting real tokens only, so left padding does not shift them (pads get 0)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def _token_logprobs(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Sum over ``t`` of ``log_softmax(logits)[r, t, labels[r, t]]`` where ``keep``: shape ``(rows,)``."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~keep, 0.0).sum(dim=-1)


@dataclass
class _Prompted:
    """A batch after the prompt pass: first-token scores and what the answers' tokens need."""

    scores: torch.Tensor
    """``(b, k)``: log-probability of each answer's first token."""
    cache: Any
    """The model's cache over (virtual tokens +) the padded prompts."""
    past_mask: torch.Tensor
    """``(b, virtual + width)``: which cache slots are real (virtual ones, then the prompt's)."""
    lengths: torch.Tensor
    """``(b,)``: prompt lengths in tokens, i.e. the position of each answer's first token."""


def _prompt_pass(model: Any, requests: Sequence[CausalRequest], pad_id: int, plan: _Plan, side: str) -> _Prompted:
    """ONE forward over the padded prompts, cache kept, scoring every answer's first token."""
    device = next(model.parameters()).device
    b = len(requests)
    ids, mask = _pad([r.context for r in requests], pad_id, side)
    ids, mask = ids.to(device), mask.to(device)
    width = ids.shape[1]
    lengths = mask.sum(dim=1)
    # Index in the padded input of each row's last prompt token: its logits predict the answers' first tokens.
    last = torch.full_like(lengths, width - 1) if side == "left" else lengths - 1
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": True}
    if plan.method != "prompt":
        # Count real tokens only, so left padding shifts no position. (PEFT drops position ids
        # under prompt tuning, where right padding makes its default right; under prefix
        # tuning it adds the prefix length to them itself.)
        inputs["position_ids"] = _positions(mask)
    if plan.keeps_logits:
        # Only the positions that predict a first answer token: (b, width, vocab) logits would
        # be the biggest tensor of the pass, by far, with a real vocabulary.
        inputs["logits_to_keep"] = width - int(last.min())
    out = model(**inputs)
    # Read from the END: prompt tuning's virtual tokens come first and make the logits longer.
    at = last - width + out.logits.shape[1]
    head = torch.log_softmax(out.logits[torch.arange(b, device=device), at].float(), dim=-1)
    first = torch.tensor([[c[0] for c in r.continuations] for r in requests], device=device)
    front = torch.ones((b, plan.virtual), dtype=mask.dtype, device=device)
    return _Prompted(head.gather(1, first), out.past_key_values, torch.cat([front, mask], dim=1), lengths)


def _feed(
    step: Any, prompted: _Prompted, plan: _Plan, pad_id: int, rows: torch.Tensor, tails: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Summed log-probability of each ``tails[r][1:]``, fed on top of the cache, whose rows are ``rows``.

    The tokens go right after their own prompt's last token in position (``lengths +
    t``, after any virtual tokens), and the attention mask hides the cache's padding
    slots, so right-padded prompts work too: the pad slots sit between prompt and answer
    in the cache but no answer token attends to them.
    """
    device = prompted.lengths.device
    tokens, tmask = _pad([t[:-1] for t in tails], pad_id, "right")
    labels, _ = _pad([t[1:] for t in tails], -1, "right")
    tokens, tmask, labels = tokens.to(device), tmask.to(device), labels.to(device)
    w = tokens.shape[1]
    out = step(
        input_ids=tokens,
        attention_mask=torch.cat([prompted.past_mask[rows], tmask], dim=1),
        position_ids=plan.virtual + prompted.lengths[rows, None] + torch.arange(w, device=device),
        past_key_values=prompted.cache,
        use_cache=True,
    )
    # Right-padded tails: the model is causal, so a tail never sees the padding after it.
    return _token_logprobs(out.logits[:, -w:], labels, tmask.bool())


def _answers_in_one_pass(
    step: Any, prompted: _Prompted, plan: _Plan, pad_id: int, requests: Sequence[CausalRequest]
) -> None:
    """Add the answers' remaining tokens to ``prompted.scores``: one pass, cache rows copied per answer."""
    pairs = [(i, j) for i, r in enumerate(requests) for j, c in enumerate(r.continuations) if len(c) > 1]
    device = prompted.scores.device
    rows = torch.tensor([i for i, _ in pairs], device=device)
    # One gather repeats each prompt's cache rows once per answer that needs them (single-token
    # answers need none).
    prompted.cache.batch_select_indices(rows)
    extra = _feed(step, prompted, plan, pad_id, rows, [requests[i].continuations[j] for i, j in pairs])
    prompted.scores[rows, torch.tensor([j for _, j in pairs], device=device)] += extra


def _answers_one_by_one(
    step: Any, prompted: _Prompted, plan: _Plan, pad_id: int, requests: Sequence[CausalRequest]
) -> None:
    """Add the answers' remaining tokens to ``prompted.scores``: one pass per answer, cache cut back after each."""
    rows = torch.arange(len(requests), device=prompted.scores.device)
    for j in range(len(requests[0].continuations)):
        tails = [r.continuations[j] for r in requests]
        w = max(len(t) for t in tails) - 1
        if w > 0:
            prompted.scores[:, j] += _feed(step, prompted, plan, pad_id, rows, tails)
            prompted.cache.crop(-w)


def _one_pass_is_cheaper(prompted: _Prompted, pairs: int, passes: int, weight_bytes: int) -> bool:
    """Whether to feed the answers' tokens in one pass (cache rows copied) rather than one pass per answer.

    Both ways do the same attention and feed-forward arithmetic on the same tokens; they
    differ in memory traffic. One pass gathers a copy of a prompt's cache rows for every
    (prompt, answer) pair that needs them, then reads the weights once; a pass per answer
    copies nothing extra but reads the weights (and pays a forward's fixed overhead) once
    per answer. So: one pass iff the gathered copy is smaller than the weights read
    again, which also bounds its extra memory by the model's size. Small batches (and
    real-size models, where the weights are gigabytes) take one pass; large batches of
    long prompts on a tiny model take a pass per answer (measurements in the module
    docstring).
    """
    layers = getattr(prompted.cache, "layers", None)
    if not layers:
        return True
    rows = prompted.scores.shape[0]
    cache_bytes = sum(
        t.numel() * t.element_size()
        for layer in layers
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
        if isinstance(t, torch.Tensor)
    )
    return pairs * cache_bytes // rows < (passes - 1) * weight_bytes


def _score_batch(
    model: Any, requests: Sequence[CausalRequest], pad_id: int, plan: _Plan, padding_side: str
) -> torch.Tensor:
    """Summed log-likelihood of each answer for each prompt of one batch: shape (prompts, answers)."""
    if plan.window is not None:
        longest = max(len(r.context) + max(len(c) for c in r.continuations) for r in requests)
        if plan.virtual + longest > plan.window:
            # A sliding-window cache drops old slots and cannot be cut back; one plain forward
            # per answer lets the model apply its window itself.
            return _score_full(model, requests, pad_id, plan)
    # Prompt tuning puts its virtual tokens in front of the padding if padded left; right keeps them adjacent.
    side = "right" if plan.method == "prompt" else padding_side
    prompted = _prompt_pass(model, requests, pad_id, plan, side)
    pairs = sum(len(c) > 1 for r in requests for c in r.continuations)
    if pairs == 0:
        return prompted.scores  # every answer is one token: one forward for the whole batch
    if not all(hasattr(prompted.cache, m) for m in ("crop", "batch_select_indices")):
        return _score_full(model, requests, pad_id, plan)  # a cache we cannot reuse: correctness first
    # The answers bypass a prompt-learning wrapper, which would prepend its soft prompt again
    # or replace the cache by fresh prefixes; LoRA, IA3 and the like live inside the base model.
    step = model.get_base_model() if plan.method in ("prompt", "prefix") else model
    passes = sum(any(len(r.continuations[j]) > 1 for r in requests) for j in range(len(requests[0].continuations)))
    if _one_pass_is_cheaper(prompted, pairs, passes, plan.weight_bytes):
        _answers_in_one_pass(step, prompted, plan, pad_id, requests)
    else:
        _answers_one_by_one(step, prompted, plan, pad_id, requests)
    return prompted.scores


def _score_full(model: Any, requests: Sequence[CausalRequest], pad_id: int, plan: _Plan) -> torch.Tensor:
    """The same scores without a cache: one forward per answer over prompt + answer, right-padded."""
    device = next(model.parameters()).device
    k = len(requests[0].continuations)
    lengths = [len(r.context) for r in requests]
    columns = []
    for j in range(k):
        seqs = [list(r.context) + list(r.continuations[j]) for r in requests]
        ids, mask = _pad(seqs, pad_id, "right")
        width = ids.shape[1]
        # labels[r, s] = the answer token at input position s + 1, predicted by the logits at s.
        labels = torch.full((len(seqs), width), -1, dtype=torch.long)
        for r, (n, req) in enumerate(zip(lengths, requests, strict=True)):
            cont = req.continuations[j]
            labels[r, n - 1 : n - 1 + len(cont)] = torch.tensor(cont)
        inputs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "use_cache": False}
        keep = width - (min(lengths) - 1)
        if plan.keeps_logits:
            inputs["logits_to_keep"] = keep
        logits = model(**inputs).logits[:, -keep:]  # from the end: past any virtual tokens
        labels = labels[:, -keep:].to(device)
        columns.append(_token_logprobs(logits, labels, labels >= 0))
    return torch.stack(columns, dim=1)


def score_answers_causal(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[Sequence[int]] | Sequence[CausalRequest],
    answers: Sequence[str],
    batch_size: int,
    *,
    padding_side: str = "right",
    reuse_prompt: bool = True,
    progress: bool = True,
    desc: str = "scoring",
    precision: str = "fp32",
) -> np.ndarray:
    """Log-likelihood of each answer after each prompt under a decoder-only model.

    Args:
        model: A causal LM or a PEFT model wrapping one; put in eval mode here.
        tokenizer: Its tokenizer, with a pad token (GPT-2 and Llama have none: set one,
            e.g. ``tokenizer.pad_token = tokenizer.eos_token``; pads are masked, so which
            token does not change the scores).
        prompts: Prompt texts; or their ids (``tokenizer(text).input_ids``, decoded to
            find the answers' split, refused if they do not encode back to themselves);
            or :class:`CausalRequest` from :func:`encode_requests`, used as they are.
        answers: Answer texts, with the leading space the harness uses (``" yes"``).
        batch_size: Prompts per batch.
        padding_side: ``"right"`` or ``"left"``: where a batch's prompts are padded.
            The scores do not depend on it. Prompt tuning always pads right.
        reuse_prompt: Run each prompt once and feed the answers on top of its cache
            (default); ``False`` runs prompt + answer once per answer, for a wrapper or
            cache that does not allow reuse.
        progress: Show a tqdm bar over batches.
        desc: Label of the progress bar.
        precision: ``fp32`` (default, no autocast), or ``bf16`` / ``fp16`` to run the
            forward passes under :func:`pubmedqa_peft.scoring.autocast`.

    Returns:
        Array ``(len(prompts), len(answers))`` of summed log-probabilities (float64), in
        input order. Nothing is truncated (the harness cuts the context from the left past
        the model's length): fit prompts to the budget first.

    Raises:
        ValueError: For a bad ``batch_size`` or ``padding_side``, no answers, no pad
            token, or an answer without tokens of its own.
        TypeError: If ``prompts`` mixes kinds.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if not answers:
        raise ValueError("no answers to score")
    n = len(prompts)
    if n == 0:
        return np.zeros((0, len(answers)), dtype=np.float64)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token; set one, e.g. tokenizer.pad_token = tokenizer.eos_token")
    requests = _as_requests(tokenizer, prompts, answers)
    plan = _plan(model)
    lengths = np.array([len(r.context) + max(len(c) for c in r.continuations) for r in requests])
    # Longest first: the biggest batch runs first, so running out of memory shows at once.
    order = np.argsort(-lengths, kind="stable")
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    model.eval()
    device = next(model.parameters()).device
    log.debug("scoring %d prompts x %d answers in %d batches (%s)", n, len(answers), len(batches), plan)

    def score(idx: np.ndarray) -> np.ndarray:
        # inference_mode and autocast are per thread, so each batch enters them in the thread that runs it.
        with torch.inference_mode(), autocast(device, precision):
            batch = [requests[i] for i in idx]
            if reuse_prompt and plan.method != "other":
                scores = _score_batch(model, batch, pad_id, plan, padding_side)
            else:
                scores = _score_full(model, batch, pad_id, plan)
            return scores.double().cpu().numpy()

    out = np.empty((n, len(answers)), dtype=np.float64)
    with tqdm(total=len(batches), desc=desc, disable=not progress, unit="batch") as bar:
        for idx, scores in _run_batches(score, batches, cpu_workers(device, len(batches))):
            out[idx] = scores
            bar.update()
    return out
