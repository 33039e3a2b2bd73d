"""Model families: chosen from the config, how each encodes training examples, every method on every family."""

from __future__ import annotations

import types

import pytest
import torch
from conftest import gradient_probe, tiny_params
from transformers import AutoConfig, BartConfig, BertConfig, TrainerCallback

from pubmedqa_peft import families, modeling
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import uses_chat
from pubmedqa_peft.task import Task
from pubmedqa_peft.training import encode_examples, train_method

CAUSAL = ("tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-gpt2", "tiny-biogpt")
THREE = ("yes", "no", "maybe")
# Learning rates that move a tiny random model within 4 steps.
TINY_LR = {"prompt": 0.3, "prefix": 0.05, "lora": 0.02, "ia3": 0.2, "full": 0.003}


@pytest.mark.parametrize(("arch", "family"), [("tiny-t5", "seq2seq")] + [(a, "causal") for a in CAUSAL])
def test_family_comes_from_the_config(tiny_t5_dir, tiny_model_dir, arch, family):
    directory = tiny_t5_dir if arch == "tiny-t5" else tiny_model_dir(arch)
    assert modeling.load_family(str(directory)).name == family


@pytest.mark.parametrize("config", [BertConfig(), BartConfig()], ids=["bert", "bart"])
def test_an_unsupported_architecture_stops_with_one_line_listing_the_supported(config):
    with pytest.raises(families.UnsupportedModelError) as err:
        families.family_of(config, "model.name='x'")
    message = str(err.value)
    assert message == (
        f"model.name='x': architecture {config.model_type!r} is not supported; "
        "supported: t5, llama, qwen2, mistral, gpt2, biogpt"
    )


def test_a_mismatched_config_is_refused():
    config = AutoConfig.for_model("llama")
    config.is_encoder_decoder = True
    with pytest.raises(families.UnsupportedModelError, match="is_encoder_decoder=True"):
        families.family_of(config)


@pytest.mark.parametrize("arch", CAUSAL)
def test_causal_tokenizers_get_a_pad_token_and_right_padding(tiny_model_dir, arch):
    tok = modeling.load_tokenizer(str(tiny_model_dir(arch)))
    assert tok.pad_token_id is not None and tok.padding_side == "right"
    if arch in ("tiny-gpt2", "tiny-llama", "tiny-mistral"):  # they ship none: EOS pads
        assert tok.pad_token_id == tok.eos_token_id


@pytest.mark.parametrize("arch", CAUSAL)
def test_a_causal_example_is_prompt_answer_eos_with_loss_on_the_answer_only(tiny_model_dir, pqal_rows, arch):
    directory = str(tiny_model_dir(arch))
    tok = modeling.load_tokenizer(directory)
    family = modeling.load_family(directory)
    rows = pqal_rows[:6]
    features = encode_examples(tok, rows, 128, "rows", family).features
    for f, row in zip(features, rows, strict=True):
        assert len(f["input_ids"]) == len(f["labels"]) <= 128
        n_prompt = sum(1 for label in f["labels"] if label == -100)
        answer = f["input_ids"][n_prompt:]
        assert f["labels"][n_prompt:] == answer and answer[-1] == tok.eos_token_id
        assert tok.decode(answer[:-1]).strip() == row["label"]
        # The answer is what follows the prompt when both are encoded together (the harness's split).
        prompt = tok.decode(f["input_ids"][:n_prompt], skip_special_tokens=True)
        assert prompt.rstrip().endswith("yes or no.")


@pytest.mark.parametrize("arch", ["tiny-t5", "tiny-gpt2"])
def test_the_prompt_budget_leaves_room_for_exactly_the_longest_answer(tiny_t5_dir, tiny_model_dir, pqal_rows, arch):
    directory = str(tiny_t5_dir if arch == "tiny-t5" else tiny_model_dir(arch))
    tok, family, task = modeling.load_tokenizer(directory), modeling.load_family(directory), Task.of(THREE)
    budget = family.prompt_budget(tok, task.labels, 64)
    # One long record per answer: each prompt is cut to the budget, its answer follows.
    rows = [{**pqal_rows[0], "id": label, "label": label} for label in task.labels]
    features = encode_examples(tok, rows, 64, "rows", family, task=task).features
    if not family.causal:
        assert budget == 64 and all(len(f["input_ids"]) <= 64 for f in features)
        return
    answers = [sum(1 for label in f["labels"] if label != -100) for f in features]
    assert all(len(f["input_ids"]) <= 64 for f in features)
    assert max(answers) == 64 - budget  # answer + EOS of the longest, no more, no less


def test_training_and_scoring_split_the_answer_alike(tiny_model_dir, pqal_rows):
    from pubmedqa_peft.causal_scoring import encode_pair
    from pubmedqa_peft.prompts import format_prompt

    for arch in CAUSAL:
        tok = modeling.load_tokenizer(str(tiny_model_dir(arch)))
        row = pqal_rows[0]
        prompt = format_prompt(row["question"], row["context"][:200])
        ids = tok(prompt).input_ids
        example = families.FAMILIES["causal"].encode_example(tok, prompt, ids, "yes")
        context, continuation = encode_pair(tok, prompt, " yes")
        assert example["input_ids"] == [*context, *continuation, tok.eos_token_id], arch


class _KeepModel(TrainerCallback):
    model = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


def _mean_loss(model, features):
    model.eval()
    with torch.inference_mode():
        losses = [
            model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]])).loss.item()
            for f in features
        ]
    return sum(losses) / len(losses)


@pytest.mark.e2e  # 25 training runs: in the full suite, not in the quick `-m "not e2e"` one
@pytest.mark.parametrize("method", registry.names())
@pytest.mark.parametrize("arch", CAUSAL)
def test_every_method_trains_on_every_decoder_family_and_reloads_bit_identically(
    tmp_path, tiny_model_dir, pqal_rows, arch, method
):
    directory = tiny_model_dir(arch)
    # Qwen2.5-Instruct's template (system prompt and turn markers) is ~100 tiny-tokenizer tokens.
    max_len = 160 if arch == "tiny-qwen2" else 96
    params = tiny_params(
        directory,
        model={"max_source_length": max_len},
        train={"epochs": 2, "logging_steps": 2},
        **{f"train_{method}": {"lr": TINY_LR[method]}},
    )
    train_rows, val_rows = pqal_rows[:16], pqal_rows[16:20]
    kept, probe = _KeepModel(), gradient_probe()
    train_method(
        method,
        params,
        train_rows,
        val_rows,
        adapter_out=tmp_path / "model",
        metrics_out=tmp_path / "metrics.json",
        plots_out=None,
        checkpoints=tmp_path / "ckpt",
        fingerprint="family",
        callbacks=[kept, probe],
    )
    assert probe.steps > 0 and probe.missing == set()  # every trainable parameter learns in every step
    tok = modeling.load_tokenizer(str(directory))
    chat = uses_chat(tok, params.model.chat_template)  # tiny-qwen2 has a chat template: its runs use it
    features = encode_examples(
        tok, train_rows, max_len, "train", modeling.load_family(str(directory)), chat=chat
    ).features
    before = _mean_loss(modeling.load_base_model(str(directory), torch.device("cpu")), features)
    reloaded = modeling.load_trained_model(tmp_path / "model", torch.device("cpu"))
    after = _mean_loss(reloaded, features)
    assert after < before, (before, after)
    trained = kept.model.eval()
    ids = torch.tensor([features[0]["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(trained(input_ids=ids).logits, reloaded(input_ids=ids).logits, rtol=0, atol=0)


def test_biogpt_gets_its_own_lora_and_ia3_targets(tiny_model_dir):
    directory = str(tiny_model_dir("tiny-biogpt"))
    params = tiny_params(directory)
    lora = registry.get("lora").build(
        modeling.load_base_model(directory, torch.device("cpu")), params.method("lora"), ""
    )
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in lora.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "v_proj"}
    ia3 = registry.get("ia3").build(modeling.load_base_model(directory, torch.device("cpu")), params.method("ia3"), "")
    assert ia3.peft_config["default"].feedforward_modules == {"fc2"}


def test_t5_fast_paths_touch_no_other_architecture(tiny_model_dir):
    from pubmedqa_peft import fastpath

    model = modeling.load_base_model(str(tiny_model_dir("tiny-gpt2")), torch.device("cpu"))
    assert fastpath.enable(model) == []
    assert not any(
        isinstance(getattr(m, "forward", None), types.MethodType) and m.forward.__func__.__module__ == fastpath.__name__
        for m in model.modules()
    )


@pytest.mark.parametrize(("arch", "model_type", "chat"), [("tiny-gpt2", "gpt2", False), ("tiny-qwen2", "qwen2", True)])
def test_a_decoder_model_run_records_its_family_and_chat_template(
    tmp_path, tiny_model_dir, pqal_rows, arch, model_type, chat
):
    import json

    directory = tiny_model_dir(arch)
    params = tiny_params(directory, train={"epochs": 1})
    train_method(
        "lora",
        params,
        pqal_rows[:8],
        pqal_rows[8:10],
        adapter_out=tmp_path / "model",
        metrics_out=tmp_path / "metrics.json",
        plots_out=None,
        checkpoints=tmp_path / "ckpt",
        fingerprint="family",
    )
    manifest = json.loads((tmp_path / "model" / "run.json").read_text())
    assert (manifest["model_type"], manifest["family"], manifest["chat_template"]) == (model_type, "causal", chat)
