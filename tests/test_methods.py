import pytest
import torch
from conftest import tiny_params
from peft import get_peft_model

from pubmedqa_peft import modeling
from pubmedqa_peft.methods import peft_config


@pytest.fixture(scope="module")
def tiny(tiny_t5_dir):
    return tiny_t5_dir


def _wrap(model_dir, method, **section):
    params = tiny_params(model_dir, **({f"train_{method}": section} if section else {}))
    base = modeling.load_base_model(str(model_dir), torch.device("cpu"))
    return get_peft_model(base, peft_config(method, params, base.config, str(model_dir))), base.config


def test_prompt_tuning_trains_only_encoder_soft_tokens(tiny):
    model, cfg = _wrap(tiny, "prompt", num_virtual_tokens=7)
    trainable, _ = modeling.count_parameters(model)
    # One d_model vector per soft token: PEFT's seq2seq default would report twice this.
    assert trainable == 7 * cfg.d_model


def test_prefix_tuning_footprint_uses_heads_times_d_kv(tiny):
    model, cfg = _wrap(tiny, "prefix", num_virtual_tokens=5)
    trainable, _ = modeling.count_parameters(model)
    assert cfg.num_heads * cfg.d_kv != cfg.d_model  # the tiny model keeps flan-t5-small's mismatch
    assert trainable == 5 * cfg.num_decoder_layers * 2 * cfg.num_heads * cfg.d_kv


def test_lora_footprint_counts_q_and_v_of_every_attention(tiny):
    model, cfg = _wrap(tiny, "lora", r=4, target_modules=["q", "v"])
    trainable, total = modeling.count_parameters(model)
    inner = cfg.num_heads * cfg.d_kv
    attentions = cfg.num_layers + 2 * cfg.num_decoder_layers  # encoder self; decoder self + cross
    assert trainable == attentions * 2 * 4 * (cfg.d_model + inner)
    assert total > trainable


def test_prefix_tuning_is_padding_invariant(tiny):
    # Pins the num_transformer_submodules choice: with 1, T5's cross-attention appends the
    # encoder keys to the prefix cache and a padded batch crashes or gives other numbers.
    model, _ = _wrap(tiny, "prefix", num_virtual_tokens=4)
    torch.nn.init.normal_(model.prompt_encoder["default"].embedding.weight)
    model.eval()
    ids = torch.randint(5, 200, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = torch.tensor([[5, 1], [6, 1]])
    with torch.inference_mode():
        batched = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        alone = model(input_ids=ids[1:, :9], attention_mask=mask[1:, :9], labels=labels[1:]).logits
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=1e-5)


def test_prefix_changes_the_decoder_output(tiny):
    model, _ = _wrap(tiny, "prefix", num_virtual_tokens=4)
    model.eval()
    ids = torch.randint(5, 200, (1, 12))
    labels = torch.tensor([[5, 1]])
    with torch.inference_mode():
        before = model(input_ids=ids, labels=labels).logits.clone()
        torch.nn.init.normal_(model.prompt_encoder["default"].embedding.weight, std=5.0)
        after = model(input_ids=ids, labels=labels).logits
    assert not torch.allclose(before, after)
