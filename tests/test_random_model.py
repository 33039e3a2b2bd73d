"""Tests of the offline random-weight models and their offline tokenizers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import sentencepiece as spm
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig

from pubmedqa_peft import modeling, random_model, random_tokenizers
from pubmedqa_peft.prompts import LABELS, format_prompt
from pubmedqa_peft.random_model import read_corpus
from pubmedqa_peft.stage import PipelineError

# google/flan-t5-small's config.json on the hub (the values that define its shape).
FLAN_T5_SMALL = {
    "d_model": 512,
    "d_ff": 1024,
    "d_kv": 64,
    "num_heads": 6,
    "num_layers": 8,
    "num_decoder_layers": 8,
    "vocab_size": 32128,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.1,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "is_gated_act": True,
    "dense_act_fn": "gelu_new",
}

# Texts whose characters T5's nmt_nfkc normaliser rewrites: ligature, micro sign,
# no-break space, full-width letters, repeated spaces, a newline.
AWKWARD_TEXTS = [
    "Is ﬁbrosis reduced after 5\u00a0µg of ＡＢＣ?",
    "  Leading   and trailing spaces  ",
    "Line one.\nLine two with myocardial infarction.",
]


def _directory_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


# --- tiny-t5 ----------------------------------------------------------------------------------


def test_tiny_t5_is_small_complete_and_loads_like_a_hub_model(tiny_t5_dir: Path) -> None:
    files = {p.name for p in tiny_t5_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not any(name.endswith(".bin") for name in files)
    size = sum(p.stat().st_size for p in tiny_t5_dir.iterdir())
    assert size < 5_000_000, f"tiny-t5 is {size} bytes"

    config = json.loads((tiny_t5_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is False  # like the hub's flan-t5 config

    tokenizer = modeling.load_tokenizer(str(tiny_t5_dir))
    model = modeling.load_base_model(str(tiny_t5_dir), torch.device("cpu"))
    assert type(tokenizer).__name__ == "T5Tokenizer"  # the class google/flan-t5-small loads with
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer("yes").input_ids[-1] == tokenizer.eos_token_id
    assert model.config.vocab_size == len(tokenizer)
    assert model.lm_head.weight is not model.shared.weight
    assert not torch.equal(model.lm_head.weight, model.shared.weight)
    # Same head count and inner-dim / d_model ratio as flan-t5-small (prefix tuning cares).
    assert model.config.num_heads * model.config.d_kv != model.config.d_model

    batch = tokenizer([format_prompt("Does aspirin help?", "We studied 40 patients.")], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)).logits
    assert logits.shape == (1, 1, model.config.vocab_size)
    assert torch.isfinite(logits).all()
    # The random head is scaled so that a random model is not absurdly confident.
    assert 0.1 < logits.std().item() < 10


def test_saved_model_reloads_with_the_weights_it_was_built_with(tiny_t5_dir: Path) -> None:
    built = random_model.build_model(
        "tiny-t5", vocab_size=json.loads((tiny_t5_dir / "config.json").read_text())["vocab_size"]
    )
    loaded = modeling.load_base_model(str(tiny_t5_dir), torch.device("cpu"))
    built_state, loaded_state = built.state_dict(), loaded.state_dict()
    assert built_state.keys() == loaded_state.keys()
    for key, value in built_state.items():
        assert torch.equal(value, loaded_state[key]), key


def test_build_is_deterministic_and_seeded(generated_corpus: Path, tmp_path: Path) -> None:
    a = random_model.write_random_model("tiny-t5", tmp_path / "a", generated_corpus, seed=0)
    random_model.write_random_model("tiny-t5", tmp_path / "b", generated_corpus, seed=0)
    random_model.write_random_model("tiny-t5", tmp_path / "c", generated_corpus, seed=1)
    files_a, files_b, files_c = (_directory_bytes(tmp_path / d) for d in "abc")
    assert files_a == files_b
    assert files_a["model.safetensors"] != files_c["model.safetensors"]
    # The generated corpus is small: the tokenizer gets fewer pieces than asked, and the
    # embedding matrix follows the tokenizer.
    assert a["vocab_size"] == a["tokens"] < random_model.ARCHITECTURES["tiny-t5"].learned_pieces
    loaded = modeling.load_base_model(str(tmp_path / "a"), torch.device("cpu"))
    assert a["parameters"] == modeling.count_parameters(loaded)[1]


def test_write_is_atomic_on_failure(generated_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("old")

    def broken_write(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated failure")

    # Fails inside the atomic block, after the tokenizer and the weights were saved.
    monkeypatch.setattr(random_model.files, "write_json", broken_write)
    with pytest.raises(RuntimeError, match="simulated"):
        random_model.write_random_model("tiny-t5", out, generated_corpus)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]


# --- flan-t5-small architecture ---------------------------------------------------------------


def test_flan_t5_small_arch_matches_flan_t5_small_exactly() -> None:
    # Built on the meta device: the same code as the command, without allocating 300 MB.
    with torch.device("meta"):
        model = random_model.build_model("flan-t5-small-arch")
    assert modeling.count_parameters(model) == (76_961_152, 76_961_152)
    assert model.lm_head.weight is not model.shared.weight
    assert model.encoder.embed_tokens.weight is model.shared.weight
    for key, value in FLAN_T5_SMALL.items():
        assert getattr(model.config, key) == value, key
    # An untied T5 v1.1 head: decoder outputs are not rescaled by d_model ** -0.5.
    assert model.config.scale_decoder_outputs is False


def test_flan_arch_tokenizer_has_t5_sentinels(generated_corpus: Path) -> None:
    texts = read_corpus(generated_corpus).texts
    tokenizer = random_model.train_tokenizer(texts, 300, extra_ids=100)
    learned = len(tokenizer) - 100
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == len(tokenizer) - 1
    assert tokenizer.convert_tokens_to_ids("<extra_id_99>") == learned
    ids = tokenizer("<extra_id_0> patients", add_special_tokens=False).input_ids
    assert ids[0] == len(tokenizer) - 1
    assert len(tokenizer) <= FLAN_T5_SMALL["vocab_size"]


# --- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_encodes_exactly_like_its_sentencepiece_model(generated_corpus: Path, tmp_path: Path) -> None:
    texts = read_corpus(generated_corpus).texts
    proto = random_model.train_sentencepiece(texts, 300)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    tokenizer = random_model.tokenizer_from_sentencepiece(proto)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in [*AWKWARD_TEXTS, *texts[:200]]:
        expected = [*sp.encode(text), 1]
        assert tokenizer(text).input_ids == expected, text
        assert reloaded(text).input_ids == expected, text
    # nmt_nfkc: ligature, micro sign, no-break space and full-width letters are normalised.
    normalizer = reloaded.backend_tokenizer.normalizer
    assert normalizer.normalize_str("ﬁ µ\u00a0ＡＢＣ") == "fi μ ABC"
    decoded = reloaded.decode(reloaded(AWKWARD_TEXTS[0]).input_ids, skip_special_tokens=True)
    assert "fibrosis" in decoded


def test_answer_words_are_whole_tokens_unless_disabled(generated_corpus: Path) -> None:
    texts = read_corpus(generated_corpus).texts
    assert not any("yes" in t.lower() for t in texts)
    with_words = random_model.train_tokenizer(texts, 300)
    without = random_model.train_tokenizer(texts, 300, answer_words=False)
    for word in ("yes", "no"):
        assert len(with_words(word, add_special_tokens=False).input_ids) == 1, word
    # A tokenizer where "yes" takes several tokens, for code that must not assume one.
    yes_ids = without("yes", add_special_tokens=False).input_ids
    assert len(yes_ids) > 1
    assert without.decode(yes_ids) == "yes"


def test_token_lengths_resemble_t5_on_real_pubmedqa(shared_data: Path, tiny_t5_dir: Path) -> None:
    corpus = read_corpus(shared_data / "ori_pqal.json")
    assert len(corpus.prompts) == 1000
    arch = random_model.ARCHITECTURES["flan-t5-small-arch"]
    flan_tok = random_model.train_tokenizer(corpus.texts, arch.learned_pieces, arch.extra_ids)
    flan = random_model.prompt_length_stats(flan_tok, corpus.prompts)
    tiny = random_model.prompt_length_stats(modeling.load_tokenizer(str(tiny_t5_dir)), corpus.prompts)
    # T5's SentencePiece gives about 1.4-1.6 tokens per word on biomedical abstracts.
    assert 1.4 <= flan["tokens_per_word"] <= 1.6
    assert 250 <= flan["mean"] <= 450
    assert flan["median"] <= flan["mean"] * 1.1
    assert flan["max"] > 512  # some PubMedQA prompts need truncation, as with the real tokenizer
    # tiny-t5's smaller vocabulary splits more, but still in word pieces, not characters.
    assert flan["tokens_per_word"] < tiny["tokens_per_word"] <= 2.0
    chars_per_token = sum(len(format_prompt(q, c)) for q, c in corpus.prompts) / (tiny["mean"] * tiny["prompts"])
    assert chars_per_token > 3


# --- corpus -------------------------------------------------------------------------------------


def test_read_corpus_pubmedqa_and_plain_text(generated_corpus: Path, tmp_path: Path) -> None:
    corpus = read_corpus(generated_corpus)
    data = json.loads(generated_corpus.read_text())
    first = next(iter(data.values()))
    assert len(corpus.prompts) == len(data)
    assert corpus.prompts[0] == (first["QUESTION"], " ".join(first["CONTEXTS"]))
    assert corpus.texts[: 2 + len(first["CONTEXTS"])] == [first["QUESTION"], *first["CONTEXTS"], first["LONG_ANSWER"]]

    plain = tmp_path / "corpus.txt"
    plain.write_text("first line\n\n  second line  \n", encoding="utf-8")
    assert read_corpus(plain).texts == ["first line", "second line"]
    assert read_corpus(plain).prompts == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "non-empty JSON object"),
        ('{"123": {"QUESTION": "Q?", "CONTEXTS": "not a list"}}', "record 123: CONTEXTS"),
        ('{"123": {"CONTEXTS": ["c"]}}', "record 123: QUESTION"),
        ('{"7": "text"}', "record 7: expected an object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_read_corpus_names_the_bad_record(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PipelineError, match=message) as err:
        read_corpus(path)
    assert str(path) in str(err.value)


def test_missing_corpus_asks_for_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PipelineError, match="corpus file not found"):
        read_corpus(tmp_path / "absent.json")
    monkeypatch.chdir(tmp_path)  # no ../shared beside it
    with pytest.raises(PipelineError, match="--corpus"):
        random_model.default_corpus()


def test_precompiled_charsmap_rejects_a_model_without_one() -> None:
    with pytest.raises(ValueError, match="no precompiled normaliser"):
        random_model.precompiled_charsmap(b"\x0a\x00")  # field 1, empty bytes


# --- command line --------------------------------------------------------------------------------


def test_command_writes_model_and_reports_parameters(
    generated_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny"
    random_model.main(["tiny-t5", str(out), "--corpus", str(generated_corpus), "--seed", "3"])
    stdout = capsys.readouterr().out
    _, total = modeling.count_parameters(modeling.load_base_model(str(out), torch.device("cpu")))
    assert f"{total:,} parameters" in stdout
    assert str(out) in stdout


def test_command_fails_clearly_on_a_bad_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        random_model.main(["tiny-t5", str(tmp_path / "out"), "--corpus", str(tmp_path / "absent.txt")])
    assert exit_info.value.code == 1
    assert "corpus file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_info:
        random_model.main(["gpt-9", str(tmp_path / "out")])
    assert exit_info.value.code == 2  # argparse: invalid choice


# --- decoder-only families --------------------------------------------------------------------


class Family(NamedTuple):
    """What a tiny decoder must look like: the real model's classes and special tokens."""

    model_type: str
    model_class: str
    tokenizer_class: str
    """The class AutoTokenizer gives the real model's files in transformers 5."""
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None
    prepended: str | None
    """The special token put in front of every text, if any (none is appended)."""


FAMILIES = {
    "tiny-llama": Family(
        "llama",
        "LlamaForCausalLM",
        "TokenizersBackend",
        "<|begin_of_text|>",
        "<|end_of_text|>",
        None,
        None,
        "<|begin_of_text|>",
    ),
    "tiny-qwen2": Family(
        "qwen2", "Qwen2ForCausalLM", "Qwen2Tokenizer", None, "<|im_end|>", "<|endoftext|>", None, None
    ),
    "tiny-mistral": Family("mistral", "MistralForCausalLM", "TokenizersBackend", "<s>", "</s>", None, "<unk>", "<s>"),
    "tiny-gpt2": Family(
        "gpt2", "GPT2LMHeadModel", "GPT2Tokenizer", "<|endoftext|>", "<|endoftext|>", None, "<|endoftext|>", None
    ),
    "tiny-biogpt": Family("biogpt", "BioGptForCausalLM", "BioGptTokenizer", "<s>", "</s>", "<pad>", "<unk>", "</s>"),
}
BYTE_LEVEL = ("tiny-gpt2", "tiny-llama", "tiny-qwen2")
GQA = ("tiny-llama", "tiny-qwen2", "tiny-mistral")

# Any UTF-8 must survive a byte-level BPE: Greek and micro signs, a ligature, a no-break
# space, full-width letters, emoji, CJK, control and zero-width characters, runs of spaces.
ROUND_TRIP_TEXTS = [
    "β-blocker 5 µg",
    "Is ﬁbrosis reduced after 5\u00a0µg of ＡＢＣ?",
    "  Leading   and trailing spaces  ",
    "Line one.\nLine two\twith a tab.\r\n",
    "emoji 😀, 中文, Ελληνικά, \x00 control, zero\u200bwidth",
    "caf\u00e9 and cafe\u0301",  # composed and decomposed é
    "don't stop at 1234567",
]


def _load(model_dir: Path) -> tuple[Any, Any]:
    """Tokenizer and model through the Auto classes, exactly as for a hub checkpoint."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, trust_remote_code=False, use_safetensors=True, local_files_only=True
    )
    return tokenizer, model


@pytest.mark.parametrize("arch", FAMILIES)
def test_decoder_loads_through_the_auto_classes_and_is_tiny(arch: str, tiny_model_dir: Callable[[str], Path]) -> None:
    family = FAMILIES[arch]
    model_dir = tiny_model_dir(arch)
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"} <= names
    assert not any(name.endswith(".bin") for name in names)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == family.model_type
    assert config["architectures"] == [family.model_class]
    assert AutoConfig.from_pretrained(model_dir, local_files_only=True).model_type == family.model_type

    tokenizer, model = _load(model_dir)
    assert type(model).__name__ == family.model_class
    assert type(tokenizer).__name__ == family.tokenizer_class
    assert model.config.vocab_size >= len(tokenizer)
    _, total = modeling.count_parameters(model)
    assert total < random_model.TINY_MAX_PARAMETERS

    batch = tokenizer([format_prompt("Does aspirin help?", "We studied 40 patients.")], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()
    assert 0.01 < logits.std().item() < 10


@pytest.mark.parametrize("arch", FAMILIES)
def test_decoder_special_tokens_are_the_real_models(arch: str, tiny_model_dir: Callable[[str], Path]) -> None:
    family = FAMILIES[arch]
    tokenizer, model = _load(tiny_model_dir(arch))
    assert (tokenizer.bos_token, tokenizer.eos_token) == (family.bos, family.eos)
    assert (tokenizer.pad_token, tokenizer.unk_token) == (family.pad, family.unk)
    vocab = tokenizer.get_vocab()
    assert model.config.eos_token_id == vocab[family.eos]
    if family.bos is not None:
        assert model.config.bos_token_id == vocab[family.bos]

    ids = tokenizer("Is it yes?").input_ids
    plain = tokenizer("Is it yes?", add_special_tokens=False).input_ids
    assert ids == ([vocab[family.prepended]] if family.prepended else []) + plain
    # Each answer word is one token, alone and after the prompt as the log-likelihood scorer
    # sees it ("encode context + answer together, split at the context's length").
    context = format_prompt("Does aspirin help?", "We studied 40 patients.")
    for word in LABELS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
        if arch == "tiny-biogpt":
            # Not there: Moses keeps the prompt's final "no." together when a lowercase word
            # follows (a non-breaking prefix), so the context's own tokens change.
            continue
        answer = tokenizer(context + " " + word).input_ids[len(tokenizer(context).input_ids) :]
        assert len(answer) == 1, word
        assert tokenizer.decode(answer).strip() == word


def test_gpt2_has_endoftext_last_and_no_pad_token(tiny_model_dir: Callable[[str], Path]) -> None:
    tokenizer, model = _load(tiny_model_dir("tiny-gpt2"))
    last = len(tokenizer) - 1
    assert tokenizer.convert_ids_to_tokens(last) == "<|endoftext|>"  # 50256 in GPT-2
    assert model.config.bos_token_id == model.config.eos_token_id == last
    assert tokenizer.pad_token is None and tokenizer.pad_token_id is None
    assert model.config.pad_token_id is None
    assert model.config.vocab_size == len(tokenizer)
    assert model.lm_head.weight is model.transformer.wte.weight  # GPT-2 ties its head


def test_llama3_special_tokens_are_the_last_256_ids(tiny_model_dir: Callable[[str], Path]) -> None:
    tokenizer, model = _load(tiny_model_dir("tiny-llama"))
    first = len(tokenizer) - 256
    tail = tokenizer.convert_ids_to_tokens(list(range(first, len(tokenizer))))
    assert tail[:2] == ["<|begin_of_text|>", "<|end_of_text|>"]  # 128000, 128001 in Llama-3
    assert tail[6:10] == ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    assert tail[-1] == "<|reserved_special_token_250|>"
    assert len(tokenizer("<|eot_id|>", add_special_tokens=False).input_ids) == 1
    assert model.config.pad_token_id is None
    assert model.lm_head.weight is not model.model.embed_tokens.weight  # untied, as Llama-3 8B


def test_qwen2_chat_template_added_tokens_and_padded_embeddings(tiny_model_dir: Callable[[str], Path]) -> None:
    model_dir = tiny_model_dir("tiny-qwen2")
    tokenizer, model = _load(model_dir)
    messages = [{"role": "user", "content": "Is it?"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nIs it?<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [
        {"role": "system", "content": "Answer yes or no."},
        *messages,
        {"role": "assistant", "content": "yes"},
    ]
    assert tokenizer.apply_chat_template(with_system, tokenize=False) == (
        "<|im_start|>system\nAnswer yes or no.<|im_end|>\n<|im_start|>user\nIs it?<|im_end|>\n"
        "<|im_start|>assistant\nyes<|im_end|>\n"
    )
    # The 22 added tokens are the last ids, in Qwen2.5's order, never split.
    added = {token.content: (token_id, token.special) for token_id, token in tokenizer.added_tokens_decoder.items()}
    first = len(tokenizer) - 22
    assert added["<|endoftext|>"] == (first, True)
    assert added["<|im_end|>"] == (first + 2, True)
    assert added["<tool_call>"] == (first + 14, False)
    assert added["<|file_sep|>"] == (len(tokenizer) - 1, False)
    ids = tokenizer("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False).input_ids
    assert ids[0] == first + 1 and ids[-1] == first + 2
    # Generation stops at either end marker, as Qwen2.5-Instruct's generation config says.
    assert model.generation_config.eos_token_id == [first + 2, first]
    assert model.generation_config.pad_token_id == first
    # Embedding rows padded past the tokenizer (151,936 rows for 151,665 tokens in Qwen2.5).
    assert model.config.vocab_size % 128 == 0
    assert model.config.vocab_size > len(tokenizer)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as Qwen2.5-0.5B


@pytest.mark.parametrize("arch", BYTE_LEVEL)
def test_byte_level_tokenizers_round_trip_any_text(arch: str, tiny_model_dir: Callable[[str], Path]) -> None:
    from tokenizers.pre_tokenizers import ByteLevel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir(arch), local_files_only=True)
    byte_symbols = set(ByteLevel.alphabet())
    for text in ROUND_TRIP_TEXTS:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        # Qwen2 normalises to NFC first, as the real one does; the others keep every byte.
        expected = unicodedata.normalize("NFC", text) if arch == "tiny-qwen2" else text
        assert tokenizer.decode(ids) == expected, text
        tokens = tokenizer.convert_ids_to_tokens(ids)
        assert set("".join(tokens)) <= byte_symbols, text  # no unknown token, no special token
    # The split regexes differ in digits: Llama-3 groups up to three, Qwen2 splits each.
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("in 1234567 patients", add_special_tokens=False).input_ids)
    longest_number = max(len(t.strip("Ġ")) for t in tokens if t.strip("Ġ").isdigit())
    assert longest_number <= {"tiny-llama": 3, "tiny-qwen2": 1, "tiny-gpt2": 7}[arch]


def test_sentencepiece_bpe_tokenizer_encodes_exactly_like_sentencepiece(generated_corpus: Path, tmp_path: Path) -> None:
    texts = read_corpus(generated_corpus).texts
    sp = spm.SentencePieceProcessor(model_proto=random_tokenizers.train_sentencepiece_bpe(texts, 500))
    tokenizer = random_tokenizers.sentencepiece_bpe_tokenizer(texts, 500)
    reloaded = {}
    for model_type, config_class in (("mistral", MistralConfig), ("llama", LlamaConfig)):
        tokenizer.save_pretrained(tmp_path / model_type)
        config_class(vocab_size=len(tokenizer)).save_pretrained(tmp_path / model_type)
        reloaded[model_type] = AutoTokenizer.from_pretrained(tmp_path / model_type)
    for text in [*AWKWARD_TEXTS, *ROUND_TRIP_TEXTS, *texts[:200]]:
        expected = [1, *sp.encode(text)]  # <s> in front, nothing at the end
        assert tokenizer(text).input_ids == expected, text
        assert reloaded["mistral"](text).input_ids == expected, text  # the saved tokenizer.json as it is
        # transformers' LlamaTokenizer rebuilds it and adds no dummy prefix before a leading space.
        llama_expected = expected[:1] + expected[2:] if text[:1].isspace() else expected
        assert reloaded["llama"](text).input_ids == llama_expected, text


def test_mistral_tokenizer_is_sentencepiece_bpe_with_byte_fallback(tiny_model_dir: Callable[[str], Path]) -> None:
    tokenizer, model = _load(tiny_model_dir("tiny-mistral"))
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 258]) == ["<unk>", "<s>", "</s>", "<0x00>", "<0xFF>"]
    tokens = tokenizer.tokenize("myocardial infarction 😀")
    assert tokens[0].startswith("▁")  # SentencePiece's word-start marker, not byte-level's Ġ
    assert tokens[-4:] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]  # byte fallback, no <unk>
    for text in ROUND_TRIP_TEXTS:
        ids = tokenizer(text).input_ids
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text, text
    assert model.config.sliding_window == 4096  # Mistral-7B-v0.1's


def test_biogpt_tokenizer_is_moses_then_bpe(tiny_model_dir: Callable[[str], Path]) -> None:
    tokenizer, model = _load(tiny_model_dir("tiny-biogpt"))
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    tokens = tokenizer.tokenize("methylprednisolone-treated patients (p<0.05).")
    # Moses splits (aggressive dashes as @-@, escapes <), then BPE marks each word's end with </w>.
    words = "".join(tokens).split("</w>")[:-1]
    assert words == ["methylprednisolone", "@-@", "treated", "patients", "(", "p", "&lt;", "0.05", ")", "."]
    ids = tokenizer("the patients 😀 .").input_ids
    assert ids[0] == tokenizer.sep_token_id == 2  # BioGPT puts </s> in front
    assert tokenizer.unk_token_id in ids  # no byte fallback: an unseen character is <unk>
    text = "the methylprednisolone treated patients."
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text
    assert model.config.scale_embedding is True


@pytest.mark.parametrize("arch", GQA)
def test_grouped_query_attention_is_exercised(arch: str, tiny_model_dir: Callable[[str], Path]) -> None:
    _, model = _load(tiny_model_dir(arch))
    config = model.config
    assert config.num_key_value_heads < config.num_attention_heads
    attention = model.model.layers[0].self_attn
    head_dim = config.hidden_size // config.num_attention_heads
    assert attention.k_proj.out_features == config.num_key_value_heads * head_dim
    assert attention.q_proj.out_features == config.num_attention_heads * head_dim


@pytest.mark.parametrize("arch", FAMILIES)
def test_decoder_build_is_deterministic_and_seeded(arch: str, generated_corpus: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        random_model.write_random_model(arch, tmp_path / name, generated_corpus, seed=seed, prompt_stats=False)
    files_a, files_b, files_c = (_directory_bytes(tmp_path / d) for d in "abc")
    assert files_a == files_b
    assert files_a["model.safetensors"] != files_c["model.safetensors"]


def test_byte_level_bpe_training_is_the_same_in_any_process(generated_corpus: Path, tmp_path: Path) -> None:
    # The trainer uses hash maps and threads: another process (hash seed) or thread count
    # must not change a single merge.
    texts = read_corpus(generated_corpus).texts
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    here = random_tokenizers.train_byte_level_bpe(texts, 600, random_tokenizers.LLAMA3_SPLIT).to_str()
    script = (
        "import json, sys; from pubmedqa_peft import random_tokenizers as r; "
        "texts = json.load(open(sys.argv[1], encoding='utf-8')); "
        "sys.stdout.write(r.train_byte_level_bpe(texts, 600, r.LLAMA3_SPLIT).to_str())"
    )
    for threads in ("1", "3"):
        env = {**os.environ, "RAYON_NUM_THREADS": threads, "PYTHONHASHSEED": threads}
        proc = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "texts.json")], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == here


# --- TinyLlama-1.1B architecture --------------------------------------------------------------

# TinyLlama/TinyLlama-1.1B's config.json on the hub (the values that define its shape).
TINYLLAMA = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def test_tinyllama_arch_matches_tinyllama_exactly() -> None:
    with torch.device("meta"):  # the command's code, without allocating 4.4 GB
        model = random_model.build_model("tinyllama-1.1b-arch")
    assert modeling.count_parameters(model) == (1_100_048_384, 1_100_048_384)
    assert model.config.model_type == "llama"
    for key, value in TINYLLAMA.items():
        assert getattr(model.config, key) == value, key
    assert model.config.rope_parameters["rope_theta"] == 10000.0
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert model.dtype == torch.bfloat16  # saved as the hub's checkpoint is


def test_tinyllama_arch_tokenizer_has_32000_pieces_on_pubmedqa(shared_data: Path) -> None:
    arch = random_model.ARCHITECTURES["tinyllama-1.1b-arch"]
    corpus = read_corpus(shared_data / "ori_pqal.json")
    tokenizer = random_model.train_arch_tokenizer(arch, corpus.texts)
    assert len(tokenizer) == 32000  # Llama-2's size, reached by merges alone: no filler tokens
    stats = random_model.prompt_length_stats(tokenizer, corpus.prompts)
    assert 1.3 <= stats["tokens_per_word"] <= 1.6


# --- Qwen2.5-0.5B architecture ----------------------------------------------------------------

# Qwen/Qwen2.5-0.5B-Instruct's config.json on the hub (the values that define its shape).
QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "hidden_act": "silu",
}


def test_qwen25_arch_matches_qwen25_05b_exactly() -> None:
    with torch.device("meta"):  # the command's code, without allocating 2 GB
        model = random_model.build_model("qwen2.5-0.5b-arch")
    assert modeling.count_parameters(model) == (494_032_768, 494_032_768)
    assert model.config.model_type == "qwen2"
    for key, value in QWEN25_05B.items():
        assert getattr(model.config, key) == value, key
    assert model.config.rope_parameters["rope_theta"] == 1_000_000.0
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as Qwen2.5-0.5B's
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.bias is not None and attention.o_proj.bias is None  # q/k/v biases only
    assert model.dtype == torch.bfloat16


def test_qwen25_arch_tokenizer_is_qwen2_kind_with_realistic_lengths(shared_data: Path) -> None:
    arch = random_model.ARCHITECTURES["qwen2.5-0.5b-arch"]
    corpus = read_corpus(shared_data / "ori_pqal.json")
    tokenizer = random_model.train_arch_tokenizer(arch, corpus.texts)
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    # PQA-L runs out of merges before 32000: fewer tokens than embedding rows, never more.
    assert 20000 < len(tokenizer) <= arch.learned_pieces < arch.embedding_rows
    stats = random_model.prompt_length_stats(tokenizer, corpus.prompts)
    assert 1.3 <= stats["tokens_per_word"] <= 1.6
    for label in LABELS:
        assert len(tokenizer(" " + label).input_ids) == 1


def test_special_token_ids_resolve_tokens_and_name_a_missing_one(tiny_model_dir: Callable[[str], Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("tiny-qwen2"), local_files_only=True)
    ids = random_model.special_token_ids(tokenizer, {"pad_token_id": "<|endoftext|>", "eos_token_id": ("<|im_end|>",)})
    assert ids == {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": [tokenizer.eos_token_id]}
    with pytest.raises(ValueError, match="'<s>' is not in the tokenizer's vocabulary"):
        random_model.special_token_ids(tokenizer, {"bos_token_id": "<s>"})
