"""Tests of answer scoring on tiny random T5 models (offline, a few seconds on CPU)."""

from __future__ import annotations

import string
import threading
from collections import Counter

import numpy as np
import pytest
import torch
from peft_support import tiny_peft
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from pubmedqa_peft import modeling, scoring
from pubmedqa_peft.prompts import LABELS, fit_prompt, format_prompt

# PEFT calls a transformers method that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

# --- tiny offline model and tokenizer ------------------------------------------------------


def _char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, so ``yes`` is 3 tokens + ``</s>`` and ``no`` is 2 + ``</s>``."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in string.printable:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _tiny_t5(vocab_size: int, seed: int = 0) -> T5ForConditionalGeneration:
    # num_heads * d_kv != d_model, as on flan-t5-small, so prefix tuning's token_dim matters.
    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=6,
        num_heads=4,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=2,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        feed_forward_proj="gated-gelu",
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return _char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> T5ForConditionalGeneration:
    return _tiny_t5(len(tokenizer))


def _prompts(n: int, seed: int = 0) -> list[str]:
    """Prompts of very different lengths, so batches need real padding."""
    rng = np.random.default_rng(seed)
    words = ["cell", "dose", "risk", "trial", "mice", "gene", "rate", "age", "blood", "tumour"]
    out = []
    for _ in range(n):
        q = " ".join(rng.choice(words, size=int(rng.integers(2, 6))))
        c = " ".join(rng.choice(words, size=int(rng.integers(1, 16))))
        out.append(format_prompt(f"Does {q} matter?", c))
    return out


def _naive_scores(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, prompts: list[str]) -> np.ndarray:
    """The reference: one example, one candidate, one full forward at a time, no padding."""
    out = np.zeros((len(prompts), len(LABELS)))
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            enc = tokenizer(prompt, return_tensors="pt")
            for j, label in enumerate(LABELS):
                target = tokenizer(text_target=label, return_tensors="pt").input_ids
                logits = model(**enc, labels=target).logits[0]
                logp = torch.log_softmax(logits.double(), dim=-1)
                out[i, j] = sum(float(logp[t, target[0, t]]) for t in range(target.shape[1]))
    return out


# --- tests -------------------------------------------------------------------------------------


def test_multi_token_answers_are_summed_over_all_their_tokens(model, tokenizer):
    yes = tokenizer(text_target="yes").input_ids
    no = tokenizer(text_target="no").input_ids
    assert len(yes) == 4 and len(no) == 3, "precondition: multi-token answers of different lengths"
    prompts = _prompts(7)
    got = scoring.score_yes_no(model, tokenizer, prompts, batch_size=3, max_length=512, progress=False)
    assert got.shape == (7, 2)
    np.testing.assert_allclose(got, _naive_scores(model, tokenizer, prompts), rtol=0, atol=1e-4)
    # A one-token answer would give a much larger log-likelihood than a sum over four.
    assert np.all(got < 0)


def test_scores_do_not_depend_on_batch_size_or_padding(model, tokenizer):
    prompts = _prompts(20, seed=1)
    batched = scoring.score_yes_no(model, tokenizer, prompts, batch_size=16, max_length=512, progress=False)
    single = scoring.score_yes_no(model, tokenizer, prompts, batch_size=1, max_length=512, progress=False)
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
    assert np.array_equal(batched.argmax(axis=1), single.argmax(axis=1))
    # Same call twice: bit-for-bit identical.
    again = scoring.score_yes_no(model, tokenizer, prompts, batch_size=16, max_length=512, progress=False)
    assert np.array_equal(batched, again)


def test_results_come_back_in_input_order(model, tokenizer):
    prompts = _prompts(9, seed=2)
    base = scoring.score_yes_no(model, tokenizer, prompts, batch_size=4, max_length=512, progress=False)
    perm = np.random.default_rng(0).permutation(len(prompts))
    shuffled = scoring.score_yes_no(
        model, tokenizer, [prompts[i] for i in perm], batch_size=4, max_length=512, progress=False
    )
    np.testing.assert_allclose(shuffled, base[perm], rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "prompt", "prefix"])
@pytest.mark.parametrize("reuse_encoder", [True, False])
def test_peft_models_score_like_a_naive_loop(model, tokenizer, method, reuse_encoder):
    wrapped = tiny_peft(model, method)
    prompts = _prompts(6, seed=3)
    got = scoring.score_yes_no(
        wrapped, tokenizer, prompts, batch_size=4, max_length=512, reuse_encoder=reuse_encoder, progress=False
    )
    np.testing.assert_allclose(got, _naive_scores(wrapped, tokenizer, prompts), rtol=0, atol=1e-4)
    # The adapter is really in effect: the scores differ from the base model's.
    plain = scoring.score_yes_no(model, tokenizer, prompts, batch_size=4, max_length=512, progress=False)
    assert np.abs(got - plain).max() > 1e-3


# --- the project's own tiny model, loaded as the evaluate stage loads models ------------------


@pytest.fixture(scope="module")
def stage_model(tiny_t5_dir):
    """``tiny-t5`` (real T5Tokenizer, random weights) through ``modeling``'s loaders."""
    return modeling.load_tokenizer(str(tiny_t5_dir)), modeling.load_base_model(str(tiny_t5_dir), torch.device("cpu"))


def _fitted_prompts(tokenizer, n: int, max_length: int) -> list[str]:
    rng = np.random.default_rng(5)
    words = ["patients", "trial", "mortality", "risk", "cohort", "increased", "compared", "children", "analysis"]
    return [
        fit_prompt(
            tokenizer,
            f"Is {' '.join(rng.choice(words, size=3))} associated with outcome?",
            " ".join(rng.choice(words, size=int(rng.integers(5, 400)))),
            max_length,
            str(i),
        )
        for i in range(n)
    ]


def test_stage_model_scores_are_batch_invariant_and_exact(stage_model):
    tokenizer, base = stage_model
    prompts = _fitted_prompts(tokenizer, 12, max_length=128)
    assert max(len(tokenizer(p).input_ids) for p in prompts) == 128, "precondition: some prompts were cut"
    batched = scoring.score_yes_no(base, tokenizer, prompts, batch_size=16, max_length=128, progress=False)
    single = scoring.score_yes_no(base, tokenizer, prompts, batch_size=1, max_length=128, progress=False)
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
    assert np.array_equal(batched.argmax(axis=1), single.argmax(axis=1))
    np.testing.assert_allclose(batched[:6], _naive_scores(base, tokenizer, prompts[:6]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["lora", "prompt", "prefix"])
def test_adapters_loaded_by_the_stage_loader_score_like_a_naive_loop(stage_model, tiny_t5_dir, method, tmp_path):
    # As the evaluate stage loads them: safetensors, is_trainable=False (PEFT's inference
    # mode, where prefix tuning reads its prefixes straight from its table).
    tokenizer, base = stage_model
    tiny_peft(base, method).save_pretrained(tmp_path / method, safe_serialization=True)
    model = modeling.load_adapter_model(str(tiny_t5_dir), tmp_path / method, torch.device("cpu"))
    assert model.active_peft_config.inference_mode
    prompts = _fitted_prompts(tokenizer, 6, max_length=96)
    got = scoring.score_yes_no(model, tokenizer, prompts, batch_size=4, max_length=96, progress=False)
    np.testing.assert_allclose(got, _naive_scores(model, tokenizer, prompts), rtol=0, atol=1e-4)
    plain = scoring.score_yes_no(base, tokenizer, prompts, batch_size=4, max_length=96, progress=False)
    assert np.abs(got - plain).max() > 1e-3


@pytest.mark.parametrize("one_pass", [False, True])
@pytest.mark.parametrize("method", [None, "lora", "prompt", "prefix"])
def test_one_encoder_pass_per_batch_and_no_generate(model, tokenizer, method, one_pass, monkeypatch):
    monkeypatch.setattr(scoring, "_one_pass_is_cheaper", lambda *args: one_pass)
    wrapped = model if method is None else tiny_peft(model, method)
    base = wrapped if method is None else wrapped.get_base_model()
    calls = {"encoder": 0, "decoder": []}

    def on_encoder(module, args, kwargs, out):
        calls["encoder"] += 1

    def on_decoder(module, args, kwargs, out):
        calls["decoder"].append(tuple(out.last_hidden_state.shape[:2]))

    hooks = [
        base.encoder.register_forward_hook(on_encoder, with_kwargs=True),
        base.decoder.register_forward_hook(on_decoder, with_kwargs=True),
    ]

    def no_generate(*args, **kwargs):
        raise AssertionError("score_yes_no must not call generate()")

    monkeypatch.setattr(type(wrapped), "generate", no_generate)
    try:
        scoring.score_yes_no(wrapped, tokenizer, _prompts(10), batch_size=4, max_length=512, progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert calls["encoder"] == 3  # ceil(10 / 4) batches, one encoder pass each
    # Per batch (4, 4, 2 prompts): one decoder step for the start token, then the rest of
    # the candidates: "no</s>" is 3 tokens and "yes</s>" 4 here, and with the cache of the
    # first step only the tokens after the first are fed, either one pass per candidate
    # over the batch's rows or one pass over both candidates of every prompt (rows
    # repeated, padded to the longer candidate). Prefix tuning brings its own cache, so
    # the first step runs only the encoder and each candidate feeds its full target.
    if method == "prefix":
        expected = [(b, n) for b in (4, 4, 2) for n in (3, 4)]
    elif one_pass:
        expected = [shape for b in (4, 4, 2) for shape in ((b, 1), (2 * b, 3))]
    else:
        expected = [(b, n) for b in (4, 4, 2) for n in (1, 2, 3)]
    # Batches may run on parallel threads (see the next tests), so compare without order.
    assert Counter(calls["decoder"]) == Counter(expected)


@pytest.fixture
def torch_threads():
    """Set torch's CPU thread count for a test; restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_cpu_batches_run_in_parallel_with_single_threaded_numbers(model, tokenizer, torch_threads):
    prompts = _prompts(12, seed=4)
    # Two batches must be inside the encoder at the same time, or the barrier breaks.
    barrier = threading.Barrier(2, timeout=30)
    seen: list[str] = []

    def on_encoder(module, args):
        seen.append(threading.current_thread().name)
        if len(seen) <= 2:
            barrier.wait()

    hook = model.encoder.register_forward_pre_hook(on_encoder)
    try:
        torch_threads(2)
        parallel = scoring.score_yes_no(model, tokenizer, prompts, batch_size=3, max_length=512, progress=False)
        assert torch.get_num_threads() == 2, "the caller's thread count is restored"
        parallel_threads, seen[:] = set(seen), []
        barrier = threading.Barrier(1)  # one thread from here on
        torch_threads(1)
        serial = scoring.score_yes_no(model, tokenizer, prompts, batch_size=3, max_length=512, progress=False)
    finally:
        hook.remove()
    assert len(parallel_threads) == 2 and all(name.startswith("scoring") for name in parallel_threads)
    assert set(seen) == {threading.current_thread().name}
    # Each batch ran single-threaded kernels either way: bit-identical numbers.
    assert np.array_equal(parallel, serial)
    assert scoring.cpu_workers(torch.device("cpu"), 1) == 1
    assert scoring.cpu_workers(torch.device("cuda"), 4) == 1


def test_a_failing_batch_stops_parallel_scoring_and_restores_threads(model, tokenizer, torch_threads, monkeypatch):
    original = scoring._score_batch
    calls: list[int] = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("batch failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(scoring, "_score_batch", failing)
    torch_threads(2)
    with pytest.raises(RuntimeError, match="batch failed"):
        scoring.score_yes_no(model, tokenizer, _prompts(12), batch_size=2, max_length=512, progress=False)
    assert torch.get_num_threads() == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("scoring")], "worker threads are gone"


def test_too_long_prompt_is_refused_not_truncated(model, tokenizer):
    prompts = _prompts(3)
    limit = min(len(tokenizer(p).input_ids) for p in prompts) - 1
    with pytest.raises(ValueError, match="longer than max_length"):
        scoring.score_yes_no(model, tokenizer, prompts, batch_size=2, max_length=limit, progress=False)


def test_empty_input_and_bad_batch_size(model, tokenizer):
    assert scoring.score_yes_no(model, tokenizer, [], batch_size=4, max_length=64, progress=False).shape == (0, 2)
    with pytest.raises(ValueError, match="batch_size"):
        scoring.score_yes_no(model, tokenizer, ["x"], batch_size=0, max_length=64, progress=False)


def test_probabilities_are_a_two_way_softmax():
    loglik = np.array([[-1.0, -2.0], [-3.0, -0.5], [-0.7, -0.7], [-1000.0, -1.0], [-1.0, -1000.0]])
    p = scoring.probabilities(loglik)
    expected = np.exp(loglik[:, 1]) / np.exp(loglik).sum(axis=1)
    expected[3], expected[4] = 1.0, 0.0  # exp underflows in the naive formula
    np.testing.assert_allclose(p, expected, atol=1e-12)
    assert p[2] == 0.5
    with pytest.raises(ValueError, match="shape"):
        scoring.probabilities(np.zeros((3, 1)))


def test_latency_and_throughput_are_positive_and_ordered(model, tokenizer):
    prompts = _prompts(5)
    lat = scoring.measure_latency(model, tokenizer, prompts, samples=5, warmup=1, max_length=512)
    assert set(lat) == {"median", "p90", "samples"}
    assert 0 < lat["median"] <= lat["p90"]
    assert lat["samples"] == 5
    tput = scoring.measure_throughput(model, tokenizer, prompts, batch_size=4, max_length=512)
    assert tput > 0


def test_a_decoder_only_model_is_scored_as_answers_continuing_the_prompt(tiny_model_dir, pqal_rows):
    from pubmedqa_peft import causal_scoring, modeling
    from pubmedqa_peft.prompts import fit_prompts

    directory = str(tiny_model_dir("tiny-gpt2"))
    tok = modeling.load_tokenizer(directory)
    model = modeling.load_base_model(directory, torch.device("cpu"))
    prompts = fit_prompts(tok, pqal_rows[:5], 90, "rows")
    got = scoring.score_yes_no(model, tok, prompts, 2, 90, progress=False)
    # Column order is LABELS (no, yes), each answer with the harness's leading space.
    want = causal_scoring.score_answers_causal(model, tok, prompts, [" no", " yes"], 5, progress=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="more than max_length=40"):
        scoring.score_yes_no(model, tok, prompts, 2, 40, progress=False)


def test_three_answers_add_a_maybe_column_and_leave_the_others_unchanged(model, tokenizer):
    prompts = _prompts(5, seed=2)
    two = scoring.score_yes_no(model, tokenizer, prompts, batch_size=2, max_length=512, progress=False)
    three = scoring.score_yes_no(
        model, tokenizer, prompts, batch_size=2, max_length=512, progress=False, labels=("no", "yes", "maybe")
    )
    assert three.shape == (5, 3)
    np.testing.assert_allclose(three[:, :2], two, rtol=0, atol=1e-5)
    with torch.inference_mode():
        enc = tokenizer(prompts[0], return_tensors="pt")
        target = tokenizer(text_target="maybe", return_tensors="pt").input_ids
        logp = torch.log_softmax(model(**enc, labels=target).logits[0].double(), dim=-1)
        want = sum(float(logp[t, target[0, t]]) for t in range(target.shape[1]))
    assert three[0, 2] == pytest.approx(want, abs=1e-4)
    probs = scoring.probabilities(three)
    assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=1), 1)
    assert np.array_equal(probs.argmax(axis=1), three.argmax(axis=1))
    # Two answers keep returning P(yes) alone.
    assert scoring.probabilities(two).shape == (5,)


# --- mixed precision ----------------------------------------------------------------------------


def _autocast_seen(model):
    """Record, at every forward of ``model``'s innermost T5/GPT-2 module, whether CPU autocast was on."""
    seen: list[tuple[bool, torch.dtype]] = []
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model

    def hook(module, args):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))

    return seen, inner.register_forward_pre_hook(hook)


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_bf16_scoring_runs_every_batch_under_autocast_and_stays_close_to_fp32(
    stage_model, tiny_model_dir, pqal_rows, torch_threads, family
):
    from pubmedqa_peft.prompts import fit_prompts

    if family == "seq2seq":
        tok, model = stage_model
    else:
        directory = str(tiny_model_dir("tiny-gpt2"))
        tok, model = modeling.load_tokenizer(directory), modeling.load_base_model(directory, torch.device("cpu"))
    prompts = fit_prompts(tok, pqal_rows[:12], 90, "rows")
    torch_threads(2)  # two worker threads: autocast must be entered in each, not only in the caller
    seen, hook = _autocast_seen(model)
    try:
        before = scoring.score_yes_no(model, tok, prompts, 3, 90, progress=False)  # no precision: as before
        assert seen and not any(on for on, _ in seen)
        fp32 = scoring.score_yes_no(model, tok, prompts, 3, 90, progress=False, precision="fp32")
        assert not any(on for on, _ in seen)
        seen.clear()
        bf16 = scoring.score_yes_no(model, tok, prompts, 3, 90, progress=False, precision="bf16")
    finally:
        hook.remove()
    assert seen and all(s == (True, torch.bfloat16) for s in seen)
    assert np.array_equal(fp32, before)  # fp32 is bit-identical to scoring without a precision
    assert not np.array_equal(bf16, fp32)
    p16, p32 = scoring.probabilities(bf16), scoring.probabilities(fp32)
    # bf16 keeps 8 bits of mantissa; measured max |P(yes) difference| over these 12 prompts:
    # 0.0009 (tiny-t5), 0.0002 (tiny-gpt2), deterministic on CPU. Stated tolerance: 0.01.
    assert np.abs(p16 - p32).max() < 0.01
