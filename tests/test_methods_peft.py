import pytest
import torch
from conftest import tiny_params

from pubmedqa_peft import modeling
from pubmedqa_peft.methods import registry
from pubmedqa_peft.stage import PipelineError


@pytest.fixture(scope="module")
def tiny(tiny_t5_dir):
    return tiny_t5_dir


def _wrap(model_dir, method, **section):
    params = tiny_params(model_dir, **({f"train_{method}": section} if section else {}))
    base = modeling.load_base_model(str(model_dir), torch.device("cpu"))
    return registry.get(method).build(base, params.method(method), str(model_dir)), base.config


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


def test_lora_auto_targets_are_peft_defaults_for_t5(tiny):
    model, _ = _wrap(tiny, "lora")
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == {"q", "v"}


def test_dora_adds_a_magnitude_per_output_feature(tiny):
    plain, cfg = _wrap(tiny, "lora", r=4)
    dora, _ = _wrap(tiny, "lora", r=4, use_dora=True)
    inner = cfg.num_heads * cfg.d_kv
    attentions = cfg.num_layers + 2 * cfg.num_decoder_layers
    # DoRA's magnitude vector: one value per output feature of each adapted q and v.
    assert modeling.count_parameters(dora)[0] - modeling.count_parameters(plain)[0] == attentions * 2 * inner


def test_ia3_scales_keys_values_and_feed_forward_inputs(tiny):
    model, cfg = _wrap(tiny, "ia3")
    trainable, _ = modeling.count_parameters(model)
    inner = cfg.num_heads * cfg.d_kv
    attentions = cfg.num_layers + 2 * cfg.num_decoder_layers
    # k and v outputs (inner each) in every attention; wo's input (d_ff) in every feed-forward block.
    assert trainable == attentions * 2 * inner + (cfg.num_layers + cfg.num_decoder_layers) * cfg.d_ff
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all("ia3_l" in n for n in names)


def test_full_fine_tuning_trains_every_weight(tiny):
    model, _ = _wrap(tiny, "full")
    trainable, total = modeling.count_parameters(model)
    assert trainable == total > 0


@pytest.mark.parametrize(
    ("method", "key", "section"),
    [
        ("lora", "train_lora.target_modules", {"target_modules": ["q", "query_proj"]}),
        ("ia3", "train_ia3.target_modules", {"target_modules": ["nope"], "feedforward_modules": []}),
        ("ia3", "train_ia3.feedforward_modules", {"feedforward_modules": ["wi_9"]}),
    ],
)
def test_a_module_the_model_lacks_is_refused_naming_the_ones_it_has(tiny, method, key, section):
    with pytest.raises(PipelineError) as err:
        _wrap(tiny, method, **section)
    message = str(err.value)
    assert message.startswith(f"{key}: the model (T5ForConditionalGeneration) has no module named")
    assert "its linear layers are: k, lm_head, o, q, v, wi_0, wi_1, wo" in message
    assert "\n" not in message


def test_ia3_feedforward_modules_must_be_targeted(tiny):
    with pytest.raises(PipelineError, match=r"must be a subset of train_ia3\.target_modules"):
        _wrap(tiny, "ia3", target_modules=["k", "v"], feedforward_modules=["wo"])


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
