"""Tokenizers of each decoder-only family's own kind, trained offline on a corpus.

The random-weight models of :mod:`pubmedqa_peft.random_model` need tokenizers that behave
like the real ones (the hub cannot be reached to fetch those), so each family gets a
tokenizer built by the same algorithm, with the same pre-tokenisation and the same special
tokens, only with a small vocabulary learned from PubMedQA:

========================  =====================================================================
kind (:data:`BUILDERS`)   what it reproduces
========================  =====================================================================
``gpt2``                  GPT-2: byte-level BPE, GPT-2's split regex, ``<|endoftext|>`` as the
                          last id and as bos = eos = unk, no pad token, no BOS added.
``llama3``                Llama-3: byte-level BPE with Llama-3's split regex (digits in groups
                          of up to three), its 256 special tokens as the last ids
                          (``<|begin_of_text|>`` added in front of every text,
                          ``<|end_of_text|>`` as eos, ``<|eot_id|>`` ...), no pad token.
``qwen2``                 Qwen2.5-Instruct: NFC, byte-level BPE with Qwen2's split regex
                          (single digits), its 22 added tokens as the last ids, eos
                          ``<|im_end|>``, pad ``<|endoftext|>``, no bos, no BOS added, and its
                          ChatML chat template (:data:`QWEN2_CHAT_TEMPLATE`).
``sentencepiece-bpe``     Llama-2 / Mistral / TinyLlama: a SentencePiece BPE model with byte
                          fallback (``<unk>`` = 0, ``<s>`` = 1 added in front, ``</s>`` = 2,
                          then the 256 ``<0xNN>`` byte pieces), served by transformers as
                          ``LlamaTokenizer`` and encoding exactly like SentencePiece (see
                          :func:`sentencepiece_bpe_tokenizer` for one exception).
``biogpt``                BioGPT: Moses tokenisation then fastBPE-style BPE (``</w>`` ends a
                          word), ``BioGptTokenizer`` with ``vocab.json`` + ``merges.txt``,
                          ``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2 (put in front of every
                          text), ``<unk>`` = 3.
========================  =====================================================================

Vocabulary sizes count every token, special ones included. A small corpus can give fewer.

Determinism: the ``tokenizers`` BPE trainer gives identical files for the same corpus run
after run, in fresh processes (different hash seeds) and with 1, 2 or 7 threads
(``RAYON_NUM_THREADS``); its ties are broken by token ids, which come from a sorted
alphabet. Not with its ``end_of_word_suffix`` option, though: the suffixed characters are
numbered in hash-map order, so BioGPT's word-end BPE uses a stand-in instead (see
:func:`train_word_end_bpe`). (Its Unigram trainer is not deterministic either, see
:mod:`pubmedqa_peft.random_model`.) SentencePiece depends on its thread count, so :data:`SENTENCEPIECE_THREADS` fixes
it. The ``seed`` argument of the builders is there for a uniform signature: none of these
trainers draws random numbers.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SENTENCEPIECE_THREADS = 2
"""SentencePiece's result depends on its thread count, so it is fixed, not per machine."""

GPT2_EOS = "<|endoftext|>"
"""GPT-2's only special token: bos, eos and unk at once."""

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Llama-3's pre-tokenisation regex (tiktoken's cl100k pattern), from its ``tokenizer.json``."""

LLAMA3_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(5, 251)),
)
"""Meta-Llama-3's 256 special tokens in id order (ids 128000-128255 there, the last ids here)."""

QWEN2_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
"""Qwen2.5's added tokens in id order (151643-151664 there, the last ids here), with their
``special`` flag: the tool-call and fill-in-the-middle markers are not special."""

QWEN2_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n\
You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\
\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or \
(message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
"""Qwen2.5-Instruct's chat template (ChatML with a default system prompt and tool calls)."""

QWEN2_MODEL_MAX_LENGTH = 131072
"""``model_max_length`` of Qwen2.5-Instruct's tokenizer config."""

GPT2_MODEL_MAX_LENGTH = 1024
"""``model_max_length`` of GPT-2's tokenizer config (its context length)."""

BIOGPT_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
"""BioGPT's (fairseq's) first four ids, in order."""

BIOGPT_MODEL_MAX_LENGTH = 1024
"""``model_max_length`` of microsoft/biogpt's tokenizer config."""


# --- byte-level BPE: GPT-2, Llama-3, Qwen2 ----------------------------------------------------


def byte_level_pre_tokenizer(split: str | None) -> Any:
    """The pre-tokeniser of a byte-level BPE: a split regex, then bytes mapped to characters.

    Args:
        split: The split regex; None = GPT-2's, built into ``ByteLevel``.

    Returns:
        A ``tokenizers`` pre-tokeniser.
    """
    from tokenizers import Regex, pre_tokenizers

    if split is None:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def train_byte_level_bpe(texts: Sequence[str], vocab_size: int, split: str | None, nfc: bool = False) -> Any:
    """Train a byte-level BPE with no special tokens (the builders add their own after it).

    All 256 byte symbols are in the vocabulary whatever the corpus, so any UTF-8 text
    encodes without an unknown token and decodes back exactly.

    Args:
        texts: Training texts.
        vocab_size: Learned tokens, the 256 bytes included.
        split: The split regex (see :func:`byte_level_pre_tokenizer`).
        nfc: Normalise to Unicode NFC first (Qwen2 does).

    Returns:
        The trained ``tokenizers.Tokenizer`` with its pre-tokeniser and byte-level decoder.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    if nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = byte_level_pre_tokenizer(split)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _vocab_and_merges(tokenizer: Any) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and the ordered merges of a trained ``tokenizers`` BPE."""
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def gpt2_tokenizer(texts: Sequence[str], vocab_size: int, seed: int = 0) -> Any:
    """A GPT-2 tokenizer: byte-level BPE, ``<|endoftext|>`` last, no pad token.

    Args:
        texts: Training texts.
        vocab_size: Tokens including ``<|endoftext|>``.
        seed: Unused (BPE training draws no random numbers).

    Returns:
        A ``GPT2Tokenizer``.
    """
    from transformers import GPT2Tokenizer

    vocab, merges = _vocab_and_merges(train_byte_level_bpe(texts, vocab_size - 1, split=None))
    vocab[GPT2_EOS] = len(vocab)  # GPT-2's is 50256, its last id
    # GPT2Tokenizer's defaults are GPT-2's: bos = eos = unk = <|endoftext|>, pad None, no BOS added.
    return GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=GPT2_MODEL_MAX_LENGTH)


def llama3_tokenizer(texts: Sequence[str], vocab_size: int, seed: int = 0) -> Any:
    """A Llama-3 tokenizer: byte-level BPE, Llama-3's regex and 256 special tokens, BOS added.

    Args:
        texts: Training texts.
        vocab_size: Tokens including the 256 special ones.
        seed: Unused (BPE training draws no random numbers).

    Returns:
        A ``TokenizersBackend`` (what transformers loads Meta-Llama-3's
        ``PreTrainedTokenizerFast`` as).
    """
    from tokenizers import AddedToken, processors
    from transformers import TokenizersBackend

    tokenizer = train_byte_level_bpe(texts, vocab_size - len(LLAMA3_SPECIAL_TOKENS), split=LLAMA3_SPLIT)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIAL_TOKENS])
    bos = LLAMA3_SPECIAL_TOKENS[0]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    return TokenizersBackend(tokenizer_object=tokenizer, bos_token=bos, eos_token=LLAMA3_SPECIAL_TOKENS[1])


def qwen2_tokenizer(texts: Sequence[str], vocab_size: int, seed: int = 0) -> Any:
    """A Qwen2.5-Instruct tokenizer: NFC, byte-level BPE, 22 added tokens, ChatML template.

    Args:
        texts: Training texts.
        vocab_size: Tokens including the 22 added ones.
        seed: Unused (BPE training draws no random numbers).

    Returns:
        A ``Qwen2Tokenizer``.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    trained = train_byte_level_bpe(texts, vocab_size - len(QWEN2_ADDED_TOKENS), split=PRETOKENIZE_REGEX, nfc=True)
    vocab, merges = _vocab_and_merges(trained)
    for token, _ in QWEN2_ADDED_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=QWEN2_MODEL_MAX_LENGTH,
        extra_special_tokens=[t for t, special in QWEN2_ADDED_TOKENS[1:] if special],
        chat_template=QWEN2_CHAT_TEMPLATE,
    )
    # Already in the vocabulary: this marks them as added tokens (never split) with Qwen's flags.
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN2_ADDED_TOKENS])
    return tokenizer


# --- SentencePiece BPE: Llama-2, Mistral, TinyLlama --------------------------------------------


def train_sentencepiece_bpe(texts: Sequence[str], vocab_size: int, seed: int = 0) -> bytes:
    """Train a SentencePiece BPE model with Llama-2's trainer settings, deterministically.

    Llama-2's ``tokenizer.model`` (shared by Mistral and TinyLlama) records them: BPE,
    byte fallback, digits split, no normalisation, extra whitespace kept, a dummy prefix
    space, character coverage 0.99995, pieces of at most 16 characters.

    Args:
        texts: Training texts.
        vocab_size: Pieces including ``<unk>``, ``<s>``, ``</s>`` and the 256 byte pieces.
            A small corpus may yield fewer.
        seed: SentencePiece's random seed.

    Returns:
        The serialised SentencePiece model (``.model`` file bytes).
    """
    return sentencepiece_model(
        texts,
        seed,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.99995,
        byte_fallback=True,  # rarer characters become <0xNN> byte pieces, never <unk>
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        max_sentencepiece_length=16,
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,  # Llama-2 and Mistral have no pad token
    )


def sentencepiece_model(texts: Sequence[str], seed: int, **options: Any) -> bytes:
    """Train a SentencePiece model deterministically with the given trainer ``options``.

    What every SentencePiece tokenizer here shares: a fixed seed and thread count (the
    result depends on both), a small corpus giving fewer pieces rather than an error,
    long passages kept (the default 4192-byte limit would silently skip them), no log.

    Args:
        texts: Training texts.
        seed: SentencePiece's random seed.
        **options: The model's own ``SentencePieceTrainer`` settings (type, size, ids, ...).

    Returns:
        The serialised SentencePiece model (``.model`` file bytes).
    """
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=out,
        hard_vocab_limit=False,
        max_sentence_length=1 << 16,
        num_threads=SENTENCEPIECE_THREADS,
        minloglevel=2,
        **options,
    )
    return out.getvalue()


def sentencepiece_bpe_tokenizer(texts: Sequence[str], vocab_size: int, seed: int = 0) -> Any:
    """A Llama-2-style tokenizer (Mistral, TinyLlama): SentencePiece BPE served by ``LlamaTokenizer``.

    The vocabulary and scores come from the SentencePiece model; the merges are rebuilt
    from them as transformers' own converter does, ordered by piece score (SentencePiece's
    merge order). The ``tokenizer.json`` is laid out as Llama-2's and Mistral-7B-v0.1's on
    the hub: a normaliser that puts SentencePiece's dummy prefix ``▁`` in front and turns
    spaces into ``▁``, no pre-tokeniser, BPE with byte fallback, ``<s>`` added in front.
    It encodes exactly like SentencePiece, leading spaces included.

    transformers 5 loads that file as it is (``TokenizersBackend``) for ``model_type``
    ``mistral``, but for ``llama`` its ``LlamaTokenizer`` rebuilds the pipeline from the
    vocabulary and merges with a ``Metaspace`` pre-tokeniser, which adds no ``▁`` to a
    text that already starts with a space: one token fewer than SentencePiece there, as
    with the real TinyLlama.

    Args:
        texts: Training texts.
        vocab_size: Pieces, as in :func:`train_sentencepiece_bpe`.
        seed: SentencePiece's random seed.

    Returns:
        A ``LlamaTokenizer`` that adds ``<s>`` in front, not ``</s>`` at the end.
    """
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_proto=train_sentencepiece_bpe(texts, vocab_size, seed))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    merges = generate_merges(vocab, {piece: sp.get_score(i) for i, piece in enumerate(pieces)})
    unk, bos, eos = (sp.id_to_piece(i) for i in (sp.unk_id(), sp.bos_id(), sp.eos_id()))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (unk, bos, eos)])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, sp.bos_id())]
    )
    # LlamaTokenizer builds its own Metaspace pipeline, then tokenizer_object replaces it.
    return LlamaTokenizer(tokenizer_object=backend, unk_token=unk, bos_token=bos, eos_token=eos)


# --- Moses + BPE: BioGPT -----------------------------------------------------------------------


def _biogpt_tokenizer_from(vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> Any:
    """A ``BioGptTokenizer`` over ``vocab`` and ``merges`` (it reads them from files only)."""
    from transformers import BioGptTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_file.write_text("".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        return BioGptTokenizer(str(vocab_file), str(merges_file), model_max_length=BIOGPT_MODEL_MAX_LENGTH)


def train_word_end_bpe(words: Sequence[Sequence[str]], vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Train a fastBPE-style BPE, where a word's last character carries ``</w>``, deterministically.

    ``tokenizers``' ``end_of_word_suffix`` option does this, but it numbers the suffixed
    characters in hash-map order, which changes from process to process, and ties between
    equally frequent merges follow those numbers: two runs give different vocabularies.
    So each word's last character is replaced by a stand-in from Unicode's private use
    area (one per character, assigned in sorted order), the trainer runs without a suffix,
    where its alphabet is sorted and its result fixed, and the stand-ins are turned back
    into ``c</w>``.

    Args:
        words: Texts already split into words (no word holds whitespace).
        vocab_size: Learned tokens, the alphabet included.

    Returns:
        The vocabulary in id order and the merges in rank order, in ``</w>`` notation.

    Raises:
        ValueError: If the corpus uses the private use area itself.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    last = sorted({word[-1] for text in words for word in text})
    if len(last) > _STAND_IN_COUNT or any(_is_stand_in(c) for text in words for word in text for c in word):
        raise ValueError("the corpus uses Unicode's supplementary private use area A; cannot mark word ends")
    stand_in = {c: chr(_STAND_IN_BASE + i) for i, c in enumerate(last)}
    restore = str.maketrans({v: c + "</w>" for c, v in stand_in.items()})
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    bpe.train_from_iterator((" ".join(w[:-1] + stand_in[w[-1]] for w in text) for text in words), trainer)
    vocab, merges = _vocab_and_merges(bpe)
    tokens = [token.translate(restore) for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    return tokens, [(a.translate(restore), b.translate(restore)) for a, b in merges]


_STAND_IN_BASE = 0xF0000
_STAND_IN_COUNT = 0xFFFE  # Supplementary Private Use Area-A: U+F0000 to U+FFFFD


def _is_stand_in(char: str) -> bool:
    return _STAND_IN_BASE <= ord(char) < _STAND_IN_BASE + _STAND_IN_COUNT


def biogpt_tokenizer(texts: Sequence[str], vocab_size: int, seed: int = 0) -> Any:
    """A BioGPT tokenizer: Moses tokenisation, then a fastBPE-style BPE with ``</w>`` word ends.

    The corpus is split into words by ``BioGptTokenizer``'s own Moses step (so training and
    encoding agree), then :func:`train_word_end_bpe` learns the merges, in the format of
    BioGPT's ``merges.txt``.

    Args:
        texts: Training texts.
        vocab_size: Tokens including ``<s>``, ``<pad>``, ``</s>`` and ``<unk>``.
        seed: Unused (BPE training draws no random numbers).

    Returns:
        A ``BioGptTokenizer`` (needs ``sacremoses``, as the real one does).
    """
    specials = {token: i for i, token in enumerate(BIOGPT_SPECIAL_TOKENS)}
    moses = _biogpt_tokenizer_from(specials, [])
    words = [[w for w in moses.moses_tokenize(text, moses.lang) if w] for text in texts]
    learned, merges = train_word_end_bpe(words, vocab_size - len(specials))
    vocab = dict(specials)
    for token in learned:
        vocab.setdefault(token, len(vocab))
    return _biogpt_tokenizer_from(vocab, merges)


TokenizerBuilder = Callable[[Sequence[str], int, int], Any]
"""``(texts, vocab_size, seed) -> transformers tokenizer``."""

BUILDERS: dict[str, TokenizerBuilder] = {
    "gpt2": gpt2_tokenizer,
    "llama3": llama3_tokenizer,
    "qwen2": qwen2_tokenizer,
    "sentencepiece-bpe": sentencepiece_bpe_tokenizer,
    "biogpt": biogpt_tokenizer,
}
"""Each tokenizer kind of the module docstring's table, by name."""
