"""Tests of the offline random-weight models and their SentencePiece tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from transformers import AutoTokenizer

from pubmedqa_peft import modeling, random_model
from pubmedqa_peft.prompts import format_prompt
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
