"""Random-weight T5 models with a real tokenizer, built offline, for smoke tests and offline runs.

Usage (from the project root)::

    python -m pubmedqa_peft.random_model ARCH OUTDIR [--corpus PATH] [--seed N]
    pubmedqa-peft random-model ARCH OUTDIR ...      # the same, installed as a command

writes OUTDIR in the ordinary Hugging Face layout (``config.json``,
``generation_config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``), so ``model.name=OUTDIR`` loads through exactly the code path
of the hub model (:func:`pubmedqa_peft.modeling.load_base_model`, ``AutoTokenizer``;
the tokenizer class is ``T5Tokenizer`` as for ``google/flan-t5-small``).
The smoke-test model's recommended OUTDIR, the one the README and the load errors name, is
:data:`pubmedqa_peft.modeling.OFFLINE_MODEL_DIR` (absolute, so the same ``model.name`` also
works in queued experiments; ``--help`` prints it).

Architectures (``ARCH``):

* ``tiny-t5``: for tests, about 0.66 M parameters and 3.2 MB on disk. d_model 64,
  d_ff 128, 2 heads of d_kv 16 (so heads x d_kv = 32 differs from d_model, as on
  flan-t5-small, which matters to prefix tuning; few heads keep the attention
  matrices of 512-token inputs cheap on a CPU), 2 encoder and 2 decoder layers,
  gated-gelu, untied output head, vocabulary = the tokenizer's 4000 tokens.
* ``flan-t5-small-arch``: exactly google/flan-t5-small's architecture (T5 v1.1
  gated-gelu, d_model 512, d_ff 1024, 6 heads of d_kv 64, 8 + 8 layers, 32 relative
  attention buckets up to distance 128, untied output head, 32128 embedding rows):
  76,961,152 parameters, 308 MB. Only the weights are random.

Weights: transformers' T5 initialisation under ``torch.manual_seed(seed)``. transformers 5
always ties T5's output head to the input embeddings when it builds a model from a
config, so the head is replaced by its own tensor (normal, std d_model^-0.5, which keeps
the logits of a random model near unit scale) and ``config.json`` says
``"tie_word_embeddings": false`` like the hub's flan-t5 config.

Tokenizer: a SentencePiece Unigram model, the algorithm (and ``nmt_nfkc`` normaliser)
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

Vocabulary size: chosen so that token counts on PubMedQA resemble T5's. T5's 32k
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
import io
import json
import logging
import statistics
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pubmedqa_peft import files
from pubmedqa_peft.modeling import OFFLINE_MODEL_DIR, count_parameters
from pubmedqa_peft.prompts import LABELS, format_prompt
from pubmedqa_peft.stage import PipelineError, setup_logging

log = logging.getLogger(__name__)

DEFAULT_CORPUS = Path("..") / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
"""PubMedQA PQA-L beside the project, the corpus used when ``--corpus`` is not given."""

SENTENCEPIECE_THREADS = 2
"""SentencePiece's result depends on its thread count, so it is fixed, not per machine."""

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


@dataclass(frozen=True)
class Architecture:
    """One buildable model: T5 config values, tokenizer size and the expected size."""

    name: str
    config: dict[str, Any]
    learned_pieces: int
    """SentencePiece vocabulary size, including ``<pad>``, ``</s>`` and ``<unk>``."""
    extra_ids: int = 0
    """T5 sentinel tokens ``<extra_id_N>`` added after the learned pieces."""
    embedding_rows: int | None = None
    """Rows of the embedding matrix; None = exactly the tokenizer's size."""
    expected_parameters: int | None = None


ARCHITECTURES: dict[str, Architecture] = {
    "tiny-t5": Architecture(
        name="tiny-t5",
        config={"d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 2, "num_layers": 2, "num_decoder_layers": 2},
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
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=out,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus gives fewer pieces instead of an error
        character_coverage=1.0,  # every character of the corpus gets a piece: no <unk> on PubMedQA
        normalization_rule_name="nmt_nfkc",  # T5's normaliser
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,  # T5 has no beginning-of-sequence token
        max_sentence_length=1 << 16,  # bytes; the default 4192 would silently skip long passages
        num_threads=SENTENCEPIECE_THREADS,
        minloglevel=2,
    )
    return out.getvalue()


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


def prompt_length_stats(tokenizer: Any, prompts: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Token lengths of the formatted prompts and tokens per word of the contexts.

    Args:
        tokenizer: A transformers tokenizer.
        prompts: (question, context) pairs.

    Returns:
        ``prompts`` (count), ``mean``, ``median`` and ``max`` tokens of
        ``format_prompt(question, context)`` including ``</s>``, and
        ``tokens_per_word``: context tokens (without ``</s>``) per whitespace word.
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


def build_model(arch: Architecture | str, vocab_size: int | None = None, seed: int = 0) -> Any:
    """Build a random-weight ``T5ForConditionalGeneration`` with an untied output head.

    Args:
        arch: An :class:`Architecture` or its name.
        vocab_size: Embedding rows; None = the architecture's ``embedding_rows``.
        seed: Torch seed of the initialisation.

    Returns:
        The model in eval mode (float32, CPU).
    """
    from transformers import T5ForConditionalGeneration

    arch = architecture(arch) if isinstance(arch, str) else arch
    rows = vocab_size or arch.embedding_rows
    if rows is None:
        raise ValueError(f"{arch.name}: give vocab_size (the tokenizer's size)")
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


def _directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_random_model(
    arch_name: str, outdir: Path | str, corpus_path: Path | str | None = None, seed: int = 0
) -> dict[str, Any]:
    """Build and save a random-weight model with its tokenizer (the command's work).

    The directory is written atomically: a failure leaves any previous ``outdir`` as it was.

    Args:
        arch_name: Key of :data:`ARCHITECTURES`.
        outdir: Target directory, replaced if it exists.
        corpus_path: Tokenizer corpus; None uses :func:`default_corpus`.
        seed: Seed of the tokenizer training and of the weights.

    Returns:
        A summary: ``architecture``, ``parameters``, ``tokens`` (tokenizer size),
        ``vocab_size`` (embedding rows), ``bytes`` on disk and, for a PubMedQA corpus,
        ``prompt_lengths`` from :func:`prompt_length_stats`.

    Raises:
        PipelineError: For an unknown architecture or a bad or missing corpus.
    """
    arch = architecture(arch_name)
    outdir = Path(outdir)
    corpus = read_corpus(corpus_path if corpus_path is not None else default_corpus())
    log.info("corpus: %d texts from %s", len(corpus.texts), corpus.path)

    log.info("training a %d-piece SentencePiece Unigram tokenizer", arch.learned_pieces)
    tokenizer = train_tokenizer(corpus.texts, arch.learned_pieces, arch.extra_ids, seed)
    log.info("tokenizer: %d tokens (%d sentinels)", len(tokenizer), arch.extra_ids)
    summary: dict[str, Any] = {"architecture": arch.name, "tokens": len(tokenizer)}
    if corpus.prompts:
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

    rows = arch.embedding_rows or len(tokenizer)
    if rows < len(tokenizer):
        raise PipelineError(f"{arch.name}: the tokenizer has {len(tokenizer)} tokens, more than {rows} embedding rows")
    log.info("building %s with %d embedding rows (seed %d)", arch.name, rows, seed)
    model = build_model(arch, rows, seed)
    _, total = count_parameters(model)
    if arch.expected_parameters is not None and total != arch.expected_parameters:
        raise RuntimeError(f"{arch.name}: built {total:,} parameters, expected {arch.expected_parameters:,}")

    log.info("writing %s", outdir)
    with files.atomic_path(outdir) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
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
        description="Write a random-weight T5 model with an offline tokenizer in Hugging Face format.",
    )
    parser.add_argument("arch", choices=sorted(ARCHITECTURES), help="architecture to build")
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
