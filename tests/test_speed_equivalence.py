"""Every speed-up gives the results of the plain computation, within float tolerance.

The fast paths (``pubmedqa_peft.fastpath``, applied by ``modeling.load_base_model``),
the scoring shortcuts (one encoder pass, cache reuse, dynamic padding, length sorting,
token ids reused from fitting) and the training batches (length-grouped, dynamically
padded) are each compared with the slow, obvious way: stock transformers models,
every input padded to 512, one example at a time. Tiny random T5 with the project's
real tokenizer on real PubMedQA prompts; offline, a few seconds each.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from peft_support import tiny_peft
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq
from transformers.activations import GELUTanh
from transformers.trainer_pt_utils import LengthGroupedSampler

from pubmedqa_peft import fastpath, modeling, scoring
from pubmedqa_peft.prompts import LABELS, fit_prompt, fit_prompts, fit_prompts_encoded
from pubmedqa_peft.training import encode_examples

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

PAD_TO = 512
BUDGET = 384
TOL = 1e-4  # log-likelihoods and losses are O(1-10); fp32 rounding differences are ~1e-6


@pytest.fixture(scope="module")
def tokenizer(tiny_t5_dir):
    return modeling.load_tokenizer(str(tiny_t5_dir))


@pytest.fixture(scope="module")
def fast(tiny_t5_dir):
    """The model as the pipeline loads it: fast paths on."""
    return modeling.load_base_model(str(tiny_t5_dir), torch.device("cpu"))


@pytest.fixture(scope="module")
def stock(tiny_t5_dir):
    """The same weights loaded by plain transformers: no fast path."""
    return AutoModelForSeq2SeqLM.from_pretrained(str(tiny_t5_dir), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompts(tokenizer, pqal_rows):
    """Real PubMedQA prompts of very different lengths (some cut to the 384-token budget)."""
    rows = pqal_rows[:40:5]
    fitted = fit_prompts(tokenizer, rows, BUDGET, "pqal")
    lengths = [len(ids) for ids in tokenizer(fitted).input_ids]
    assert max(lengths) == BUDGET and min(lengths) < BUDGET - 100, "precondition: cut and short prompts"
    return fitted


def _same_adapter(fast_base, stock_base, method: str):
    """The same adapter weights on the fast and on the stock base model."""
    fast_model, stock_model = tiny_peft(fast_base, method), tiny_peft(stock_base, method)
    stock_model.load_state_dict(fast_model.state_dict())
    return fast_model, stock_model


def _naive_padded(model, tokenizer, prompts: list[str]) -> np.ndarray:
    """One prompt at a time, padded to 512, one full forward per answer: the obvious way."""
    out = np.zeros((len(prompts), len(LABELS)))
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            enc = tokenizer(prompt, padding="max_length", max_length=PAD_TO, return_tensors="pt")
            for j, label in enumerate(LABELS):
                target = tokenizer(text_target=label, return_tensors="pt").input_ids
                logp = torch.log_softmax(model(**enc, labels=target).logits[0].double(), dim=-1)
                out[i, j] = float(logp[torch.arange(target.shape[1]), target[0]].sum())
    return out


# --- the fast paths are in effect --------------------------------------------------------------


def test_the_loader_switches_the_fast_paths_on(fast, stock):
    assert fast.config._attn_implementation == fastpath.SHARED_BIAS_SDPA
    assert stock.config._attn_implementation == "sdpa"
    ffn = [m for m in fast.modules() if type(m).__name__ == "T5DenseGatedActDense"]
    assert ffn and all(isinstance(m.act, GELUTanh) for m in ffn)
    cross = [layer.layer[1].EncDecAttention for layer in fast.decoder.block]
    assert all(a.forward.__func__ is fastpath.absorbed_cross_attention for a in cross)
    norms = [m for m in fast.modules() if type(m).__name__ == "T5LayerNorm"]
    assert norms and all(m.forward.__func__ is fastpath.fused_rms_norm for m in norms)
    # Idempotent on a model already switched.
    assert fastpath.enable(copy.deepcopy(stock))


def test_fused_rms_norm_equals_t5_layer_norm_with_gradients(stock):
    norm = copy.deepcopy(stock.encoder.final_layer_norm)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(3, 7, norm.weight.shape[0]) * 4).requires_grad_()
    want = norm(x)
    (want_grad_x, want_grad_w) = torch.autograd.grad(want.square().sum(), (x, norm.weight))
    got = fastpath.fused_rms_norm(norm, x)
    (grad_x, grad_w) = torch.autograd.grad(got.square().sum(), (x, norm.weight))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_x, want_grad_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_w, want_grad_w, rtol=1e-5, atol=1e-5)
    # Half-precision weights take T5's own forward (it casts between the steps).
    half = copy.deepcopy(norm).to(torch.bfloat16)
    assert torch.equal(fastpath.fused_rms_norm(half, x.detach()), half(x.detach()))


def test_shared_mask_is_bit_identical_to_transformers_sdpa(tiny_t5_dir, tokenizer, prompts, stock):
    shared = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_t5_dir), dtype=torch.float32).eval()
    shared.set_attn_implementation(fastpath.SHARED_BIAS_SDPA)
    calls = []
    original = fastpath.create_position_bias_mask

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    enc = tokenizer(prompts[:6], padding=True, return_tensors="pt")
    assert not bool(enc.attention_mask.all()), "precondition: a padded batch"
    labels = torch.tensor([[5, 1]] * 6)
    fastpath.create_position_bias_mask = counting
    try:
        with torch.inference_mode():
            got = shared(**enc, labels=labels).logits
    finally:
        fastpath.create_position_bias_mask = original
    with torch.inference_mode():
        want = stock(**enc, labels=labels).logits
    assert torch.equal(got, want)
    # One merged mask for the encoder and one for the decoder's cross-attention, not one per layer.
    assert len(calls) == 2 < 2 * stock.config.num_layers


@pytest.mark.parametrize("lora_on_v", [False, True])
def test_query_side_cross_attention_equals_projected_keys_and_values(stock, lora_on_v):
    model = tiny_peft(stock, "lora") if lora_on_v else copy.deepcopy(stock)
    attention = model.get_decoder().block[1].layer[1].EncDecAttention
    torch.manual_seed(0)
    states = torch.randn(3, 17, stock.config.d_model)
    queries = torch.randn(3, 2, stock.config.d_model)
    mask = torch.ones(3, 1, 2, 17, dtype=torch.bool)
    mask[0, ..., 11:] = False
    mask[2, ..., 5:] = False
    with torch.inference_mode():
        want = type(attention).forward(attention, queries, mask, states)[0]
        got = fastpath.absorbed_cross_attention(attention, queries, mask, states)[0]
        float_mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        got_float = fastpath.absorbed_cross_attention(attention, queries, float_mask, states)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_float, want, rtol=1e-5, atol=1e-5)


# --- scoring -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [None, "lora", "prompt", "prefix"])
def test_fast_scoring_equals_naive_padded_scoring_on_stock_models(fast, stock, tokenizer, prompts, method):
    fast_model, stock_model = (fast, stock) if method is None else _same_adapter(fast, stock, method)
    want = _naive_padded(stock_model, tokenizer, prompts)
    for one_pass in (False, True):  # both ways of feeding the candidates after the first token
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(scoring, "_one_pass_is_cheaper", lambda *args, one_pass=one_pass: one_pass)
            got = scoring.score_yes_no(fast_model, tokenizer, prompts, batch_size=4, max_length=BUDGET, progress=False)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL, err_msg=f"one_pass={one_pass}")
        assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))


def test_batch_size_padding_and_order_do_not_change_scores(fast, tokenizer, prompts):
    results = [
        scoring.score_yes_no(fast, tokenizer, prompts, batch_size=bs, max_length=BUDGET, progress=False)
        for bs in (1, 3, len(prompts))
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=0, atol=1e-5)
    reverse = scoring.score_yes_no(fast, tokenizer, prompts[::-1], batch_size=3, max_length=BUDGET, progress=False)
    np.testing.assert_allclose(reverse[::-1], results[0], rtol=0, atol=1e-5)


def test_small_batches_take_one_decoder_pass_and_large_ones_one_per_candidate(fast):
    config = fast.config
    assert scoring._one_pass_is_cheaper(config, rows=1, source_len=10, candidates=2)
    assert not scoring._one_pass_is_cheaper(config, rows=64, source_len=512, candidates=2)
    assert not scoring._one_pass_is_cheaper(config, rows=1, source_len=10, candidates=1)
    assert not scoring._one_pass_is_cheaper(object(), rows=1, source_len=10, candidates=2)


# --- tokenisation happens once -----------------------------------------------------------------


def test_fitted_ids_are_the_tokenized_text_so_nobody_tokenizes_again(tokenizer, pqal_rows, fast):
    rows = pqal_rows[:30]
    fitted = fit_prompts_encoded(tokenizer, rows, 96, "pqal")
    assert any(len(f.input_ids) == 96 for f in fitted), "precondition: some prompts were cut"
    assert [f.text for f in fitted] == fit_prompts(tokenizer, rows, 96, "pqal")
    assert [f.input_ids for f in fitted] == tokenizer([f.text for f in fitted]).input_ids
    assert fitted[0].text == fit_prompt(tokenizer, rows[0]["question"], rows[0]["context"], 96, rows[0]["id"])
    assert [f["input_ids"] for f in encode_examples(tokenizer, rows, 96).features] == [f.input_ids for f in fitted]
    texts = scoring.score_yes_no(fast, tokenizer, [f.text for f in fitted], 8, 96, progress=False)
    ids = scoring.score_yes_no(fast, tokenizer, [f.input_ids for f in fitted], 8, 96, progress=False)
    assert np.array_equal(texts, ids)
    with pytest.raises(TypeError, match="mix"):
        scoring.encode_prompts(tokenizer, [fitted[0].text, fitted[1].input_ids])


# --- training batches --------------------------------------------------------------------------


def _without_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = 0.0
    return model


def _per_example_losses(model, batch) -> torch.Tensor:
    logits = model(**batch).logits
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="none")
    return ce.sum(dim=1) / (batch["labels"] != -100).sum(dim=1)


@pytest.mark.parametrize("method", ["prompt", "prefix", "lora"])
def test_length_grouped_dynamic_batches_give_the_losses_and_gradients_of_padded_to_512(
    fast, stock, tokenizer, pqal_rows, method
):
    # Training mode (as in the Trainer) with dropout off, so both sides are deterministic.
    fast_model, stock_model = _same_adapter(fast, stock, method)
    for m in (fast_model, stock_model):
        _without_dropout(m).train()
    features = encode_examples(tokenizer, pqal_rows[:16], 160).features
    lengths = [len(f["input_ids"]) for f in features]
    torch.manual_seed(42)
    order = list(LengthGroupedSampler(8, lengths=lengths))
    ours = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    padded = DataCollatorForSeq2Seq(tokenizer, padding="max_length", max_length=PAD_TO, label_pad_token_id=-100)
    real = total = 0
    for start in range(0, len(order), 8):
        batch = [features[i] for i in order[start : start + 8]]
        dyn, ref = ours(batch), padded(batch)
        real += int(dyn["attention_mask"].sum())
        total += dyn["input_ids"].numel()
        assert ref["input_ids"].shape[1] == PAD_TO
        got, want = _per_example_losses(fast_model, dyn), _per_example_losses(stock_model, ref)
        torch.testing.assert_close(got, want, rtol=0, atol=TOL)
        fast_model.zero_grad()
        stock_model.zero_grad()
        got.mean().backward()
        want.mean().backward()
        grads = {n: p.grad for n, p in fast_model.named_parameters() if p.requires_grad}
        assert grads and all(g is not None for g in grads.values())
        for name, p in stock_model.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5)
    assert real / total > 0.5, "precondition: the dynamic batches are mostly real tokens"
