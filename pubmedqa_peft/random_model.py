"""Random-weight models with a real tokenizer, built offline, for smoke tests and offline runs.

Usage (from the project root)::

    python -m pubmedqa_peft.random_model ARCH OUTDIR [--corpus PATH] [--seed N]
    pubmedqa-peft random-model ARCH OUTDIR ...      # the same, installed as a command

writes OUTDIR in the ordinary Hugging Face layout (``config.json``,
``generation_config.json``, ``model.safetensors``, the tokenizer's files), so
``model.name=OUTDIR`` loads through exactly the code path of the hub model
(``AutoConfig``/``AutoTokenizer``/``AutoModel...`` with ``trust_remote_code=False``,
safetensors only; for T5 :func:`pubmedqa_peft.modeling.load_base_model`), with the
``model_type`` and the tokenizer class of the real model.
The smoke-test model's recommended OUTDIR, the one the README and the load errors name, is
:data:`pubmedqa_peft.modeling.OFFLINE_MODEL_DIR` (absolute, so the same ``model.name`` also
works in queued experiments; ``--help`` prints it).

Architectures (``ARCH``), T5:

* ``tiny-t5``: for tests, about 0.66 M parameters and 3.2 MB on disk. d_model 64,
  d_ff 128, 2 heads of d_kv 16 (so heads x d_kv = 32 differs from d_model, as on
  flan-t5-small, which matters to prefix tuning; few heads keep the attention
  matrices of 512-token inputs cheap on a CPU), 2 encoder and 2 decoder layers,
  gated-gelu, untied output head, vocabulary = the tokenizer's 4000 tokens.
* ``tiny-t5-wide``: ``tiny-t5`` at twice the width, for the planted-label sanity run
  (:mod:`pubmedqa_peft.sanity`): d_model 128, d_ff 256, 4 heads of d_kv 32, 2 + 2
  layers, the same tokenizer; 1,812,224 parameters and 7.8 MB with PQA-L's 4000 tokens. Why wider: the decoder's
  last state is RMS-normalised (norm sqrt(d_model) with the untrained norm weights) and
  the random head's rows have norm about 1, so no logit can exceed about sqrt(d_model)
  nats above zero while the other 3999 tokens' logsumexp is about ln(4000) + 0.5 = 8.8.
  At d_model 64 that caps the answer word's probability near 0.3 even for a perfect
  input; at 128 the cap is about 0.9, so a method that adapts only prefixes can make the
  answers dominate the vocabulary and the cross-entropy turns to telling them apart.
* ``flan-t5-small-arch``: exactly google/flan-t5-small's architecture (T5 v1.1
  gated-gelu, d_model 512, d_ff 1024, 6 heads of d_kv 64, 8 + 8 layers, 32 relative
  attention buckets up to distance 128, untied output head, 32128 embedding rows):
  76,961,152 parameters, 308 MB. Only the weights are random.

Decoder-only, for tests (each under :data:`TINY_MAX_PARAMETERS`): hidden size 64, 2 layers,
4 heads of 16, MLP 128 (GPT-2: its fixed 4 x 64), a tokenizer of 4000 tokens of the real
model's kind (:mod:`pubmedqa_peft.random_tokenizers`), and the real model's
normalisation, positions, tying and special tokens. Measured with the PQA-L corpus
(prompt = ``format_prompt(question, context)`` with the special tokens the tokenizer adds)::

    ARCH          class              params   disk    tokenizer                 tok/word  prompt mean  max
    tiny-llama    LlamaForCausalLM   586,048  2.6 MB  Llama-3 byte-level BPE        1.80          399  840
    tiny-qwen2    Qwen2ForCausalLM   336,448  1.6 MB  Qwen2.5 byte-level BPE        1.83          405  861
    tiny-mistral  MistralForCausalLM 586,048  2.7 MB  SentencePiece BPE (Llama-2)   1.84          408  809
    tiny-gpt2     GPT2LMHeadModel    421,632  2.0 MB  GPT-2 byte-level BPE          1.74          386  811
    tiny-biogpt   BioGptForCausalLM  388,736  1.7 MB  Moses + fastBPE               1.70          376  757

* ``tiny-llama``: Llama-3 (8B) style. Grouped-query attention (2 key/value heads for 4
  query heads), rope theta 500000, RMS eps 1e-5, untied head, 8192 positions; bos
  ``<|begin_of_text|>`` (added in front), eos ``<|end_of_text|>``, no pad token.
* ``tiny-qwen2``: Qwen2.5-Instruct style. GQA 4/2, q/k/v biases, rope theta 1e6, RMS eps
  1e-6, tied head, no sliding window; eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos,
  its ChatML chat template; embedding rows padded to a multiple of 128 (4096 rows for
  4000 tokens), as Qwen2.5 has 151,936 rows for 151,665 tokens.
* ``tiny-mistral``: Mistral-7B-v0.1 style. GQA 4/2, sliding window 4096, rope theta
  10000, untied head; ``<unk>`` 0, ``<s>`` 1 (added in front), ``</s>`` 2, byte fallback.
* ``tiny-gpt2``: GPT-2 (no GQA: every head has its own keys). Learned positions (1024),
  gelu_new, tied head; ``<|endoftext|>`` is bos = eos = unk and the last id, no pad
  token (the pipeline must choose one), nothing added to a text.
* ``tiny-biogpt``: microsoft/biogpt style (no GQA). Learned positions (1024),
  scaled embeddings, gelu, tied head; ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2 (put in front of
  every text), ``<unk>`` 3; ``BioGptTokenizer`` is Python-only (needs ``sacremoses``) and
  slow: about 14 s for PQA-L's 1000 prompts, where the others take well under a second.

Decoder-only, real size, for speed figures:

* ``tinyllama-1.1b-arch``: exactly TinyLlama-1.1B's config (hidden 2048, 22 layers, 32
  heads, 4 key/value heads, MLP 5632, 32000 embedding rows, rope theta 10000, RMS eps
  1e-5, 2048 positions, untied head): 1,100,048,384 parameters, saved in bfloat16 as the
  hub's checkpoint is, 2,204 MB on disk (building it takes about 30 s and 5 GB of memory).
  Its tokenizer is TinyLlama's kind (Llama-2's): a SentencePiece BPE of 32000 pieces with
  byte fallback, which PQA-L reaches by merges alone (no filler tokens), 1.44 tokens per
  context word, prompts of 319 tokens on average, 659 at most.
* ``qwen2.5-0.5b-arch``: exactly Qwen2.5-0.5B(-Instruct)'s config (hidden 896, 24 layers,
  14 heads, 2 key/value heads, MLP 4864, q/k/v biases, 151,936 embedding rows, tied head,
  rope theta 1e6, RMS eps 1e-6, 32768 positions, no sliding window): 494,032,768
  parameters, saved in bfloat16, 990 MB on disk; about half TinyLlama's compute per
  token, so ``benchmarks/decoder.py`` fits a 2-core CPU. Its tokenizer is Qwen2.5's kind
  (``qwen2`` below) with the vocabulary PQA-L yields when 32000 tokens are asked for
  (30,262: the corpus runs out of merges; Qwen2.5's 151,643 tokens cannot be learned from
  1000 abstracts). The embedding keeps all 151,936 rows, so every matmul has the real
  model's shape; the rows past the tokenizer are never read, as Qwen2.5's last 271 are
  not. 1.41 tokens per context word, prompts of 312 tokens on average, 715 at most.

Decoder-only weights: transformers' own initialisation (normal, std 0.02, zero biases)
under ``torch.manual_seed(seed)``, tied or untied as the real model's config says.
Decoder-only tokenizers: see :mod:`pubmedqa_peft.random_tokenizers`; they are trained on
the same corpus with the same answer words added as T5's below (so ``yes`` and ``no``,
and ``" yes"`` and ``" no"`` after the prompt, are single tokens, as in general-English
vocabularies). Every build is deterministic: the same corpus and seed give identical
files, byte for byte, in any process (checked with different hash seeds and thread counts).

T5 weights: transformers' T5 initialisation under ``torch.manual_seed(seed)``. transformers 5
always ties T5's output head to the input embeddings when it builds a model from a
config, so the head is replaced by its own tensor (normal, std d_model^-0.5, which keeps
the logits of a random model near unit scale) and ``config.json`` says
``"tie_word_embeddings": false`` like the hub's flan-t5 config.

T5 tokenizer: a SentencePiece Unigram model, the algorithm (and ``nmt_nfkc`` normaliser)
of T5's own tokenizer, trained on ``--corpus``: a PubMedQA JSON file (QUESTION, CONTEXTS
and LONG_ANSWER of every record) or a plain-text file (one text per line); by default
``../shared/data/pubmedqa/ori_pqal.json``. The prompt template's fixed text and the
answer words are added 1000 times (once per PQA-L record): T5's general-English
vocabulary has ``yes`` and ``no`` as whole words, while abstracts never contain ``yes``.
Special tokens as in T5: ``<pad>`` = 0, ``</s>`` = 1 (appended on encode), ``<unk>`` = 2;
the flan-t5-small architecture also gets T5's 100 ``<extra_id_N>`` sentinels after the
learned pieces. SentencePiece (not the ``tokenizers`` trainer) does the training because
``tokenizers``' Unigram trainer is not deterministic: its scores vary in the last digits
from run to run (hash-map order), which reorders the vocabulary. SentencePiece with a
fixed thread count gives identical files for the same corpus and seed.

T5 vocabulary size: chosen so that token counts on PubMedQA resemble T5's. T5's 32k
general-domain vocabulary splits biomedical terms into several pieces, roughly 1.4-1.6
tokens per whitespace word on abstracts (an estimate: the real tokenizer cannot be
fetched offline to measure it). A vocabulary learned from these 1000 abstracts alone fits
them far better, so it must be much smaller to split as often. Measured on the 1000 PQA-L
records (contexts joined by spaces; prompt = ``format_prompt(question, context)`` plus
``</s>``)::

    learned pieces     tokens  tokens/word  prompt tokens: mean  median  max
    3000                 3000  1.80                        399     395  836
    4000 (tiny-t5)       4000  1.68                        373     370  781
    5000                 5000  1.60                        356     354  710
    6000                 6000  1.54                        344     342  673
    7000 (flan arch)     7100  1.50                        335     332  662
    8000                 8000  1.47                        328     326  640

7000 pieces hit the middle of T5's range for ``flan-t5-small-arch``; ``tiny-t5`` takes
4000 to stay small on disk, still word pieces (``myocardial`` -> ``myocardi`` + ``al``).
:func:`prompt_length_stats` measures these numbers; the command logs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pubmedqa_peft import files, random_tokenizers
from pubmedqa_peft.modeling import OFFLINE_MODEL_DIR, count_parameters
from pubmedqa_peft.prompts import LABELS, format_prompt
from pubmedqa_peft.random_tokenizers import GPT2_EOS, LLAMA3_SPECIAL_TOKENS
from pubmedqa_peft.stage import PipelineError, setup_logging

log = logging.getLogger(__name__)

DEFAULT_CORPUS = Path("..") / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
"""PubMedQA PQA-L beside the project, the corpus used when ``--corpus`` is not given."""

MODEL_MAX_LENGTH = 512
"""Tokenizer ``model_max_length``, as in google/flan-t5-small's tokenizer config."""

_T5_COMMON: dict[str, Any] = {
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": True,
    "tie_word_embeddings": False,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "initializer_factor": 1.0,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
}


TINY_MAX_PARAMETERS = 1_000_000
"""Every ``tiny-*`` architecture stays under this many parameters (tokenizer trained on PQA-L)."""

# A tiny decoder with grouped-query attention: 4 query heads of 16 share 2 key/value heads,
# so the GQA path of Llama, Qwen2 and Mistral is exercised (their real models all use it).
_TINY_GQA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


@dataclass(frozen=True)
class Architecture:
    """One buildable model: config values, tokenizer kind and size, and the expected size."""

    name: str
    config: dict[str, Any]
    learned_pieces: int
    """Tokens the tokenizer is trained to have, its special tokens included (T5's
    sentinels come on top); a small corpus may give fewer."""
    model_type: str = "t5"
    """The ``model_type`` of ``config.json``, as on the hub: t5, llama, qwen2, mistral, gpt2, biogpt."""
    tokenizer: str = "t5"
    """``t5`` (this module's SentencePiece Unigram) or a kind of :data:`random_tokenizers.BUILDERS`."""
    extra_ids: int = 0
    """T5 sentinel tokens ``<extra_id_N>`` added after the learned pieces."""
    embedding_rows: int | None = None
    """Rows of the embedding matrix; None = the tokenizer's size (rounded up, see ``rows_multiple``)."""
    rows_multiple: int = 1
    """Embedding rows round the tokenizer's size up to a multiple of this, as Qwen2 pads its
    151,665 tokens to 151,936 rows: code must not take ``config.vocab_size`` for ``len(tokenizer)``."""
    config_tokens: Mapping[str, str] = field(default_factory=dict)
    """Config fields set to a token's id, e.g. ``{"eos_token_id": "</s>"}``."""
    generation_tokens: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    """``generation_config.json`` fields set to token ids, where they differ from the config's."""
    dtype: torch.dtype = torch.float32
    """Dtype of the saved weights, as on the hub."""
    expected_parameters: int | None = None


# Qwen2.5-Instruct: config bos/eos, and generation stops at either end marker.
_QWEN2_CONFIG_TOKENS = {"bos_token_id": "<|endoftext|>", "eos_token_id": "<|im_end|>"}
_QWEN2_GENERATION_TOKENS: dict[str, str | tuple[str, ...]] = {
    "bos_token_id": "<|endoftext|>",
    "eos_token_id": ("<|im_end|>", "<|endoftext|>"),
    "pad_token_id": "<|endoftext|>",
}

_SPM_TOKENS = {"bos_token_id": "<s>", "eos_token_id": "</s>"}
"""Llama-2-style SentencePiece models (Mistral, TinyLlama): ``<s>`` = 1, ``</s>`` = 2."""

ARCHITECTURES: dict[str, Architecture] = {
    "tiny-t5": Architecture(
        name="tiny-t5",
        config={"d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 2, "num_layers": 2, "num_decoder_layers": 2},
        learned_pieces=4000,
    ),
    "tiny-t5-wide": Architecture(
        name="tiny-t5-wide",
        config={"d_model": 128, "d_ff": 256, "d_kv": 32, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2},
        learned_pieces=4000,
    ),
    "flan-t5-small-arch": Architecture(
        name="flan-t5-small-arch",
        config={"d_model": 512, "d_ff": 1024, "d_kv": 64, "num_heads": 6, "num_layers": 8, "num_decoder_layers": 8},
        learned_pieces=7000,
        extra_ids=100,
        embedding_rows=32128,
        expected_parameters=76_961_152,
    ),
    "tiny-llama": Architecture(
        name="tiny-llama",
        model_type="llama",
        tokenizer="llama3",
        config={
            **_TINY_GQA,
            "max_position_embeddings": 8192,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
        learned_pieces=4000,
        config_tokens={"bos_token_id": LLAMA3_SPECIAL_TOKENS[0], "eos_token_id": LLAMA3_SPECIAL_TOKENS[1]},
    ),
    "tiny-qwen2": Architecture(
        name="tiny-qwen2",
        model_type="qwen2",
        tokenizer="qwen2",
        config={
            **_TINY_GQA,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "use_sliding_window": False,
        },
        learned_pieces=4000,
        rows_multiple=128,
        config_tokens=_QWEN2_CONFIG_TOKENS,
        generation_tokens=_QWEN2_GENERATION_TOKENS,
    ),
    "tiny-mistral": Architecture(
        name="tiny-mistral",
        model_type="mistral",
        tokenizer="sentencepiece-bpe",
        config={
            **_TINY_GQA,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "rms_norm_eps": 1e-5,
            "sliding_window": 4096,
            "tie_word_embeddings": False,
        },
        learned_pieces=4000,
        config_tokens=_SPM_TOKENS,
    ),
    "tiny-gpt2": Architecture(
        name="tiny-gpt2",
        model_type="gpt2",
        tokenizer="gpt2",
        config={
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 1024,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": True,
        },
        learned_pieces=4000,
        config_tokens={"bos_token_id": GPT2_EOS, "eos_token_id": GPT2_EOS},
    ),
    "tiny-biogpt": Architecture(
        name="tiny-biogpt",
        model_type="biogpt",
        tokenizer="biogpt",
        config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 1024,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-12,
            "scale_embedding": True,
            "tie_word_embeddings": True,
        },
        learned_pieces=4000,
        config_tokens={"bos_token_id": "<s>", "pad_token_id": "<pad>", "eos_token_id": "</s>"},
    ),
    "tinyllama-1.1b-arch": Architecture(
        name="tinyllama-1.1b-arch",
        model_type="llama",
        tokenizer="sentencepiece-bpe",
        config={
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
        learned_pieces=32000,
        embedding_rows=32000,
        config_tokens=_SPM_TOKENS,
        dtype=torch.bfloat16,
        expected_parameters=1_100_048_384,
    ),
    "qwen2.5-0.5b-arch": Architecture(
        name="qwen2.5-0.5b-arch",
        model_type="qwen2",
        tokenizer="qwen2",
        config={
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "use_sliding_window": False,
        },
        learned_pieces=32000,
        embedding_rows=151936,
        config_tokens=_QWEN2_CONFIG_TOKENS,
        generation_tokens=_QWEN2_GENERATION_TOKENS,
        dtype=torch.bfloat16,
        expected_parameters=494_032_768,
    ),
}


@dataclass(frozen=True)
class Corpus:
    """Texts to train the tokenizer on, plus (question, context) pairs if the source was PubMedQA."""

    path: Path
    texts: list[str]
    prompts: list[tuple[str, str]]


def default_corpus() -> Path:
    """The corpus used without ``--corpus``: ``../shared/data/pubmedqa/ori_pqal.json``.

    Raises:
        PipelineError: If that file does not exist, asking for ``--corpus``.
    """
    if DEFAULT_CORPUS.is_file():
        return DEFAULT_CORPUS
    raise PipelineError(
        f"no --corpus given and the default corpus {DEFAULT_CORPUS} (resolved: {DEFAULT_CORPUS.resolve()}) "
        "does not exist; pass --corpus PATH with a PubMedQA JSON file (ori_pqal.json) or a plain-text file"
    )


def read_corpus(path: Path | str) -> Corpus:
    """Read tokenizer-training texts from a PubMedQA JSON file or a plain-text file.

    A ``.json`` file must be PubMedQA-shaped: an object of records keyed by PMID, each
    with a string ``QUESTION``, a list of strings ``CONTEXTS`` and optionally a string
    ``LONG_ANSWER``. Any other file is read as plain text, one text per non-empty line.

    Args:
        path: The corpus file.

    Returns:
        The texts, and the (question, joined context) pairs of a PubMedQA file.

    Raises:
        PipelineError: If the file is missing, empty, or a record is malformed (naming
            the file and the record).
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"corpus file not found: {path}")
    if path.suffix.lower() != ".json":
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise PipelineError(f"{path}: the corpus has no text")
        return Corpus(path, texts, [])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict) or not data:
        raise PipelineError(f"{path}: expected a non-empty JSON object of PubMedQA records keyed by PMID")
    texts: list[str] = []
    prompts: list[tuple[str, str]] = []
    for pmid, record in data.items():
        where = f"{path}: record {pmid}"
        if not isinstance(record, dict):
            raise PipelineError(f"{where}: expected an object, got {type(record).__name__}")
        question, contexts, answer = record.get("QUESTION"), record.get("CONTEXTS"), record.get("LONG_ANSWER", "")
        if not isinstance(question, str):
            raise PipelineError(f"{where}: QUESTION must be a string, got {type(question).__name__}")
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
            raise PipelineError(f"{where}: CONTEXTS must be a list of strings")
        if not isinstance(answer, str):
            raise PipelineError(f"{where}: LONG_ANSWER must be a string, got {type(answer).__name__}")
        texts.extend(t for t in (question, *contexts, answer) if t.strip())
        prompts.append((question, " ".join(contexts)))
    return Corpus(path, texts, prompts)


def answer_word_texts(n: int) -> list[str]:
    """The prompt template's fixed text and each answer word, ``n`` times each.

    Added to the tokenizer corpus so that, as in T5's general-English vocabulary,
    ``yes`` and ``no`` are whole pieces (abstracts never say ``yes``).
    """
    return [format_prompt("", ""), *LABELS] * n


def train_sentencepiece(texts: Sequence[str], vocab_size: int, seed: int = 0) -> bytes:
    """Train a SentencePiece Unigram model the way T5's was built, deterministically.

    Args:
        texts: Training texts (sentences or passages).
        vocab_size: Pieces including ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2. A small
            corpus may yield fewer.
        seed: SentencePiece's random seed.

    Returns:
        The serialised SentencePiece model (``.model`` file bytes).
    """
    return random_tokenizers.sentencepiece_model(
        texts,
        seed,
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=1.0,  # every character of the corpus gets a piece: no <unk> on PubMedQA
        normalization_rule_name="nmt_nfkc",  # T5's normaliser
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,  # T5 has no beginning-of-sequence token
    )


def _protobuf_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield ``(field number, value)`` of a serialised protobuf message (top level only)."""

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, i

    i = 0
    while i < len(buf):
        tag, i = varint(i)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, i = varint(i)
            yield number, value
        elif wire_type == 1:
            yield number, buf[i : i + 8]
            i += 8
        elif wire_type == 2:
            length, i = varint(i)
            yield number, buf[i : i + length]
            i += length
        elif wire_type == 5:
            yield number, buf[i : i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def precompiled_charsmap(model_proto: bytes) -> bytes:
    """The normaliser table of a SentencePiece model, for ``tokenizers``' ``Precompiled``.

    Read straight from the serialised model (``ModelProto.normalizer_spec`` is field 3,
    ``NormalizerSpec.precompiled_charsmap`` its field 2) so that neither protobuf nor
    transformers' converter is needed.
    """
    for number, spec in _protobuf_fields(model_proto):
        if number == 3 and isinstance(spec, bytes):
            for inner, value in _protobuf_fields(spec):
                if inner == 2 and isinstance(value, bytes):
                    return value
    raise ValueError("the SentencePiece model has no precompiled normaliser")


def tokenizer_from_sentencepiece(model_proto: bytes, extra_ids: int = 0) -> Any:
    """Wrap a trained SentencePiece model as a transformers ``T5Tokenizer``.

    Args:
        model_proto: Bytes from :func:`train_sentencepiece`.
        extra_ids: Number of T5 sentinels; as in T5, ``<extra_id_0>`` gets the highest id.

    Returns:
        A ``T5Tokenizer`` that encodes exactly like the SentencePiece model, plus
        ``</s>`` at the end.
    """
    import sentencepiece as spm
    from tokenizers import normalizers
    from transformers import T5Tokenizer

    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(extra_ids))]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=extra_ids, model_max_length=MODEL_MAX_LENGTH)
    tokenizer.backend_tokenizer.normalizer = normalizers.Precompiled(precompiled_charsmap(model_proto))
    return tokenizer


def train_tokenizer(
    texts: Sequence[str], vocab_size: int, extra_ids: int = 0, seed: int = 0, answer_words: bool = True
) -> Any:
    """Train a T5-style tokenizer on ``texts``.

    Args:
        texts: Training texts.
        vocab_size: Learned pieces including ``<pad>``, ``</s>``, ``<unk>``.
        extra_ids: T5 sentinel tokens appended after the learned pieces.
        seed: SentencePiece's random seed.
        answer_words: Add the prompt template and the answer words (once per text,
            at most 1000 times) so ``yes``/``no`` are whole pieces. False trains on
            ``texts`` alone, e.g. to get a tokenizer where ``yes`` is several tokens.

    Returns:
        A ``T5Tokenizer``.
    """
    corpus = list(texts)
    if answer_words:
        corpus += answer_word_texts(min(len(texts), 1000))
    return tokenizer_from_sentencepiece(train_sentencepiece(corpus, vocab_size, seed), extra_ids)


def train_arch_tokenizer(arch: Architecture, texts: Sequence[str], seed: int = 0) -> Any:
    """Train the tokenizer of an architecture's kind, with the answer words added.

    Args:
        arch: The architecture (its ``tokenizer`` kind and ``learned_pieces``).
        texts: Training texts.
        seed: Seed of the trainers that draw random numbers (SentencePiece).

    Returns:
        A transformers tokenizer.
    """
    if arch.tokenizer == "t5":
        return train_tokenizer(texts, arch.learned_pieces, arch.extra_ids, seed)
    # The template and answer words, as for T5: general-English vocabularies have " yes"
    # and " no" as single tokens, while abstracts never say "yes".
    corpus = [*texts, *answer_word_texts(min(len(texts), 1000))]
    return random_tokenizers.BUILDERS[arch.tokenizer](corpus, arch.learned_pieces, seed)


def prompt_length_stats(tokenizer: Any, prompts: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Token lengths of the formatted prompts and tokens per word of the contexts.

    Args:
        tokenizer: A transformers tokenizer.
        prompts: (question, context) pairs.

    Returns:
        ``prompts`` (count), ``mean``, ``median`` and ``max`` tokens of
        ``format_prompt(question, context)`` including the special tokens the tokenizer
        adds (T5's ``</s>``, a BOS), and ``tokens_per_word``: context tokens (without
        them) per whitespace word.
    """
    if not prompts:
        raise ValueError("no prompts to measure")
    lengths = [len(ids) for ids in tokenizer([format_prompt(q, c) for q, c in prompts], verbose=False).input_ids]
    contexts = [c for _, c in prompts]
    context_tokens = sum(len(ids) for ids in tokenizer(contexts, add_special_tokens=False, verbose=False).input_ids)
    words = sum(len(c.split()) for c in contexts)
    return {
        "prompts": len(lengths),
        "mean": statistics.fmean(lengths),
        "median": statistics.median(lengths),
        "max": max(lengths),
        "tokens_per_word": context_tokens / max(words, 1),
    }


def t5_config(arch: Architecture, vocab_size: int) -> Any:
    """The ``T5Config`` of an architecture with ``vocab_size`` embedding rows."""
    from transformers import T5Config

    return T5Config(**_T5_COMMON, **arch.config, vocab_size=vocab_size, architectures=["T5ForConditionalGeneration"])


def build_model(
    arch: Architecture | str, vocab_size: int | None = None, seed: int = 0, token_ids: Mapping[str, int] | None = None
) -> Any:
    """Build a random-weight model of an architecture (T5 with an untied output head).

    Args:
        arch: An :class:`Architecture` or its name.
        vocab_size: Embedding rows; None = the architecture's ``embedding_rows``.
        seed: Torch seed of the initialisation.
        token_ids: Config fields holding token ids (``bos_token_id`` ...), from the
            tokenizer; None keeps the config class's defaults.

    Returns:
        The model in eval mode, on CPU (or the current default device, e.g. ``meta``),
        in the architecture's dtype.
    """
    arch = architecture(arch) if isinstance(arch, str) else arch
    rows = vocab_size or arch.embedding_rows
    if rows is None:
        raise ValueError(f"{arch.name}: give vocab_size (the tokenizer's size)")
    if arch.model_type == "t5":
        return _build_t5(arch, rows, seed)
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch.model_type, **arch.config, vocab_size=rows, **(token_ids or {}))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model.to(arch.dtype).eval()


def _build_t5(arch: Architecture, rows: int, seed: int) -> Any:
    """A random-weight ``T5ForConditionalGeneration`` with its own output head."""
    from transformers import T5ForConditionalGeneration

    config = t5_config(arch, rows)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    # transformers 5 ties lm_head to the shared embeddings whatever the config says;
    # flan-t5 (T5 v1.1) has its own head, so give it one.
    head = torch.empty_like(model.shared.weight)
    torch.nn.init.normal_(head, mean=0.0, std=config.d_model**-0.5)
    model.lm_head.weight = torch.nn.Parameter(head)
    getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
    return model.eval()


def architecture(name: str) -> Architecture:
    """Look up an architecture by name, with the allowed names in the error."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise PipelineError(f"unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}") from None


def special_token_ids(tokenizer: Any, fields: Mapping[str, str | tuple[str, ...]]) -> dict[str, int | list[int]]:
    """Config fields set to the ids of tokens, e.g. ``{"eos_token_id": "</s>"}`` -> ``{"eos_token_id": 2}``.

    Raises:
        ValueError: If a token is not in the tokenizer's vocabulary.
    """
    vocab = tokenizer.get_vocab()

    def token_id(token: str) -> int:
        if token not in vocab:
            raise ValueError(f"{token!r} is not in the tokenizer's vocabulary")
        return vocab[token]

    return {
        key: token_id(value) if isinstance(value, str) else [token_id(t) for t in value]
        for key, value in fields.items()
    }


def _directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_random_model(
    arch_name: str,
    outdir: Path | str,
    corpus_path: Path | str | None = None,
    seed: int = 0,
    *,
    prompt_stats: bool = True,
) -> dict[str, Any]:
    """Build and save a random-weight model with its tokenizer (the command's work).

    The directory is written atomically: a failure leaves any previous ``outdir`` as it was.

    Args:
        arch_name: Key of :data:`ARCHITECTURES`.
        outdir: Target directory, replaced if it exists.
        corpus_path: Tokenizer corpus; None uses :func:`default_corpus`.
        seed: Seed of the tokenizer training and of the weights.
        prompt_stats: Measure the prompt lengths of a PubMedQA corpus. False skips it,
            for tests: BioGPT's Python tokenizer takes about 14 s on PQA-L's prompts.

    Returns:
        A summary: ``architecture``, ``parameters``, ``tokens`` (tokenizer size),
        ``vocab_size`` (embedding rows), ``bytes`` on disk and, for a PubMedQA corpus
        measured, ``prompt_lengths`` from :func:`prompt_length_stats`.

    Raises:
        PipelineError: For an unknown architecture or a bad or missing corpus.
    """
    arch = architecture(arch_name)
    outdir = Path(outdir)
    corpus = read_corpus(corpus_path if corpus_path is not None else default_corpus())
    log.info("corpus: %d texts from %s", len(corpus.texts), corpus.path)

    log.info("training a %s tokenizer of %d tokens", arch.tokenizer, arch.learned_pieces)
    tokenizer = train_arch_tokenizer(arch, corpus.texts, seed)
    log.info("tokenizer: %s, %d tokens (%d sentinels)", type(tokenizer).__name__, len(tokenizer), arch.extra_ids)
    summary: dict[str, Any] = {"architecture": arch.name, "tokens": len(tokenizer)}
    if corpus.prompts and prompt_stats:
        stats = prompt_length_stats(tokenizer, corpus.prompts)
        summary["prompt_lengths"] = stats
        log.info(
            "prompt tokens over %d records: mean %.1f, median %.1f, max %d; %.3f tokens per context word",
            stats["prompts"],
            stats["mean"],
            stats["median"],
            stats["max"],
            stats["tokens_per_word"],
        )

    rows = arch.embedding_rows or -(-len(tokenizer) // arch.rows_multiple) * arch.rows_multiple
    if rows < len(tokenizer):
        raise PipelineError(f"{arch.name}: the tokenizer has {len(tokenizer)} tokens, more than {rows} embedding rows")
    log.info("building %s with %d embedding rows (seed %d)", arch.name, rows, seed)
    model = build_model(arch, rows, seed, special_token_ids(tokenizer, arch.config_tokens))
    for key, value in special_token_ids(tokenizer, arch.generation_tokens).items():
        setattr(model.generation_config, key, value)
    _, total = count_parameters(model)
    if arch.expected_parameters is not None and total != arch.expected_parameters:
        raise RuntimeError(f"{arch.name}: built {total:,} parameters, expected {arch.expected_parameters:,}")

    log.info("writing %s", outdir)
    with files.atomic_path(outdir) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        if arch.model_type == "t5":
            # Say what the checkpoint is, like the hub's flan-t5 config: an untied head.
            config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            config["tie_word_embeddings"] = False
            config.pop("scale_decoder_outputs", None)  # derived from tie_word_embeddings on load
            files.write_json(tmp / "config.json", config)
    summary.update(parameters=total, vocab_size=rows, bytes=_directory_size(outdir))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m pubmedqa_peft.random_model ARCH OUTDIR [--corpus PATH] [--seed N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pubmedqa_peft.random_model",
        description=(
            "Write a random-weight model (T5, Llama, Qwen2, Mistral, GPT-2 or BioGPT) with an offline "
            "tokenizer of the family's own kind, in Hugging Face format."
        ),
    )
    parser.add_argument(
        "arch",
        choices=sorted(ARCHITECTURES),
        help="architecture to build: tiny-* for tests, *-arch for a real model's exact shape (see the module docs)",
    )
    parser.add_argument(
        "outdir",
        type=Path,
        help=f'output directory, replaced if it exists (for the smoke-test model: "{OFFLINE_MODEL_DIR}")',
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help=f"tokenizer corpus: PubMedQA JSON or plain text, one text per line (default: {DEFAULT_CORPUS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of tokenizer training and weights (default 0)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        summary = write_random_model(args.arch, args.outdir, args.corpus, args.seed)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(
        f"wrote {args.outdir}: {summary['architecture']}, {summary['parameters']:,} parameters, "
        f"{summary['tokens']} tokens, {summary['bytes'] / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
