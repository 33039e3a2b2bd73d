"""Tests of device choice and of loading models, tokenizers and adapters (offline)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import peft
import pytest
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from pubmedqa_peft import modeling
from pubmedqa_peft.modeling import ModelLoadError
from pubmedqa_peft.stage import PipelineError

CPU = torch.device("cpu")
ADVICE = ("python -m pubmedqa_peft.random_model tiny-t5", "hf download google/flan-t5-small", "model.name=")


@pytest.fixture(autouse=True)
def _fresh_hub_probe() -> Iterator[None]:
    # check_hub caches its answer per process; tests that fake the hub must not leak it.
    modeling.check_hub.cache_clear()
    yield
    modeling.check_hub.cache_clear()


def _fail_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the hub probe fail as it does without network."""

    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("simulated: network is unreachable")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)


def _assert_advice(message: str) -> None:
    for hint in ADVICE:
        assert hint in message, hint


# --- devices and threads -----------------------------------------------------------------------


def test_resolve_device_cpu_and_auto_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert modeling.resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert modeling.resolve_device("auto") == CPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert modeling.resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert modeling.resolve_device("auto").type == "cuda"


def test_resolve_device_refuses_missing_or_unknown_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("cuda", "mps"):
        with pytest.raises(modeling.DeviceError, match=f"no {name.upper()} device"):
            modeling.resolve_device(name)
    with pytest.raises(PipelineError, match=r"unknown model\.device 'tpu'"):
        modeling.resolve_device("tpu")


@pytest.mark.parametrize(
    ("device", "native_bf16", "setting", "expected"),
    [
        ("cuda", True, "auto", "bf16"),  # Ampere and later
        ("cuda", False, "auto", "fp16"),  # older GPUs: fp16 with loss scaling
        ("cpu", False, "auto", "fp32"),
        ("mps", False, "auto", "fp32"),
        ("cpu", False, "bf16", "bf16"),  # CPU autocast, allowed on request
        ("cpu", False, "fp32", "fp32"),
        ("cuda", True, "fp16", "fp16"),
        ("cuda", False, "fp32", "fp32"),
        ("mps", False, "fp16", "fp16"),
    ],
)
def test_resolve_precision_per_device(
    monkeypatch: pytest.MonkeyPatch, device: str, native_bf16: bool, setting: str, expected: str
) -> None:
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native_bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert modeling.resolve_precision(setting, torch.device(device), "train.precision") == expected
    # Native bf16 only: emulated bf16 on a pre-Ampere GPU would be slower than fp32.
    assert asked == ([False] if device == "cuda" else [])


@pytest.mark.parametrize(
    ("device", "setting", "message"),
    [
        ("cpu", "fp16", r"^evaluate\.precision=fp16 is not supported on a CPU; set evaluate\.precision: bf16"),
        ("cuda", "bf16", r"^evaluate\.precision=bf16 but this GPU has no native bfloat16.*: fp16"),
        ("cpu", "fp8", r"^evaluate\.precision='fp8' is not a precision; allowed: auto, fp32, bf16, fp16$"),
    ],
)
def test_resolve_precision_refuses_what_the_device_cannot_run_in_one_line(
    monkeypatch: pytest.MonkeyPatch, device: str, setting: str, message: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(modeling.PrecisionError, match=message) as err:
        modeling.resolve_precision(setting, torch.device(device), "evaluate.precision")
    assert isinstance(err.value, PipelineError) and "\n" not in str(err.value)


def test_set_threads() -> None:
    before = torch.get_num_threads()
    try:
        modeling.set_threads(1)
        assert torch.get_num_threads() == 1
        modeling.set_threads(0)  # 0 leaves the current setting alone
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            modeling.set_threads(-1)
    finally:
        torch.set_num_threads(before)


# --- local directories ---------------------------------------------------------------------------


def test_load_local_directory(tiny_t5_dir: Path) -> None:
    tokenizer = modeling.load_tokenizer(str(tiny_t5_dir))
    model = modeling.load_base_model(str(tiny_t5_dir), CPU)
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    ids = tokenizer("Is it effective? yes").input_ids
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids


def _dropouts(model: torch.nn.Module) -> tuple[set[float], dict[str, float]]:
    """The probabilities of the model's dropout modules, and its config's dropout keys."""
    modules = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    return modules, {k: getattr(model.config, k) for k in modeling.dropout_settings(model.config)}


@pytest.mark.parametrize(
    ("arch", "keys"), [("tiny-t5", {"dropout_rate"}), ("tiny-gpt2", {"resid_pdrop", "attn_pdrop"})]
)
def test_model_dropout_replaces_every_dropout_probability_of_the_base_model(tiny_model_dir, arch, keys) -> None:
    path = str(tiny_model_dir(arch))
    own_modules, own_config = _dropouts(modeling.load_base_model(path, CPU))
    assert own_modules == {0.1} and keys <= {k for k, v in own_config.items() if v == 0.1}, own_config
    modules, config = _dropouts(modeling.load_base_model(path, CPU, dropout=0.0))
    assert modules == {0.0}
    assert config.keys() == own_config.keys() and set(config.values()) == {0.0}
    # Attention reads its probability from the config, not from a module: check it is used.
    model = modeling.load_base_model(path, CPU, dropout=0.0).train()
    ids = torch.tensor([[5, 6, 7, 8, 2]])
    kwargs = {"decoder_input_ids": ids} if arch == "tiny-t5" else {}
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, **kwargs).logits, model(input_ids=ids, **kwargs).logits)


def test_dropout_settings_match_each_family_and_skip_layerdrop() -> None:
    from transformers import BioGptConfig, LlamaConfig, T5Config

    assert modeling.dropout_settings(T5Config()) == ["classifier_dropout", "dropout_rate"]
    unset = SimpleNamespace(to_dict=lambda: {"classifier_dropout": None, "use_dropout": True, "hidden_dropout": 0.1})
    assert modeling.dropout_settings(unset) == ["hidden_dropout"]
    assert modeling.dropout_settings(LlamaConfig()) == ["attention_dropout"]
    assert modeling.dropout_settings(BioGptConfig()) == [
        "activation_dropout",
        "attention_probs_dropout_prob",
        "hidden_dropout_prob",
    ]


def test_only_layerdrop_above_zero_makes_ddp_search_for_unused_parameters() -> None:
    from transformers import BioGptConfig, GPT2Config, LlamaConfig, T5Config

    # The checkpoints' own settings: no family skips layers (BioGPT's layerdrop is 0).
    for config in (T5Config(), LlamaConfig(), GPT2Config(), BioGptConfig()):
        assert not modeling.skips_layers(config), type(config).__name__
    assert modeling.skips_layers(BioGptConfig(layerdrop=0.1))
    odd = SimpleNamespace(to_dict=lambda: {"encoder_layerdrop": 0.2, "decoder_layerdrop": 0.0})
    assert modeling.skips_layers(odd)
    assert not modeling.skips_layers(SimpleNamespace(to_dict=lambda: {"layerdrop": True, "other": 0.5}))


@pytest.mark.parametrize("name", ["./models/no-such-model", "/no/such/model/dir", "models/a/b", "~/no-such-model-dir"])
def test_missing_local_directory(name: str) -> None:
    for load in (modeling.load_tokenizer, lambda n: modeling.load_base_model(n, CPU)):
        with pytest.raises(ModelLoadError, match="directory not found") as err:
            load(name)
        _assert_advice(str(err.value))


def test_incomplete_directories_name_the_missing_file(tiny_t5_dir: Path, tmp_path: Path) -> None:
    no_config = tmp_path / "no_config"
    shutil.copytree(tiny_t5_dir, no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        modeling.load_base_model(str(no_config), CPU)

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_t5_dir, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="has no tokenizer"):
        modeling.load_tokenizer(str(no_tokenizer))

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        modeling.load_base_model(str(not_a_dir), CPU)


def test_pickle_weights_are_refused(tiny_t5_dir: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_t5_dir / "config.json", pickled)
    # Garbage content: had the loader opened it, the error would be an unpickling one.
    (pickled / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match=r"only pickle weights \(pytorch_model.bin\)") as err:
        modeling.load_base_model(str(pickled), CPU)
    assert "safetensors" in str(err.value)


# --- the hub ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["google/flan-t5-small", "pubmedqa-peft-tests/no-such-model-4c1e9"])
def test_unreachable_hub_fails_fast_with_local_directory_advice(name: str) -> None:
    """The real code path, with this machine's (absent) network: no mocks."""
    if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
        pytest.skip(f"{name} is in the local Hugging Face cache")
    start = time.monotonic()
    try:
        reachable = modeling.check_hub(name)
    except ModelLoadError:
        reachable = False  # the hub answered "no such model": also a ModelLoadError below
    if reachable:
        pytest.skip("the Hugging Face hub is reachable here; this test is about offline behaviour")
    for load in (modeling.load_tokenizer, lambda n: modeling.load_base_model(n, CPU)):
        with pytest.raises(ModelLoadError) as err:
            load(name)
        assert name in str(err.value)
        _assert_advice(str(err.value))
    assert time.monotonic() - start < 60


def _fake_hub_cache(cache: Path, repo: str, model_dir: Path) -> None:
    """Lay out ``model_dir`` as huggingface_hub's cache does after a download."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, folder / "snapshots" / commit)


def test_unreachable_hub_falls_back_to_the_cache(
    tiny_t5_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_hub_cache(tmp_path, "acme/tiny-t5", tiny_t5_dir)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    _fail_network(monkeypatch)
    tokenizer = modeling.load_tokenizer("acme/tiny-t5")
    model = modeling.load_base_model("acme/tiny-t5", CPU)
    assert model.config.vocab_size == len(tokenizer)
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache") as err:
        modeling.load_base_model("acme/other-model", CPU)
    _assert_advice(str(err.value))


def test_offline_mode_skips_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_be_called(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was contacted in offline mode")

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", must_not_be_called)
    assert modeling.check_hub("google/flan-t5-small") is False
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        modeling.load_tokenizer("google/flan-t5-small")


def test_hub_answers_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(status: int) -> object:
        response = SimpleNamespace(status_code=status, headers={}, request=None)
        error = RepositoryNotFoundError if status == 404 else HfHubHTTPError

        def get_metadata(*args: object, **kwargs: object) -> None:
            raise error(f"HTTP {status}", response=response)

        return get_metadata

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", answer(404))
    with pytest.raises(ModelLoadError, match="has no model 'acme/missing'") as err:
        modeling.check_hub("acme/missing")
    _assert_advice(str(err.value))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", answer(503))
    assert modeling.check_hub("acme/down") is False  # server trouble: use the cache
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", answer(403))
    with pytest.raises(ModelLoadError, match="refused"):
        modeling.check_hub("acme/forbidden")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: None)
    assert modeling.check_hub("acme/fine") is True


def test_invalid_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_network(monkeypatch)
    with pytest.raises(ModelLoadError, match="neither an existing local directory nor a valid hub id"):
        modeling.load_tokenizer("flan t5 small")


# --- adapters ---------------------------------------------------------------------------------------


def _lora(base: torch.nn.Module, r: int = 4) -> peft.PeftModel:
    config = peft.LoraConfig(task_type="SEQ_2_SEQ_LM", r=r, target_modules=["q", "v"], init_lora_weights=False)
    torch.manual_seed(0)
    return peft.get_peft_model(base, config)


def test_adapter_round_trip(tiny_t5_dir: Path, tmp_path: Path) -> None:
    tokenizer = modeling.load_tokenizer(str(tiny_t5_dir))
    trained = _lora(modeling.load_base_model(str(tiny_t5_dir), CPU)).eval()
    trained.save_pretrained(tmp_path / "lora")
    loaded = modeling.load_adapter_model(str(tiny_t5_dir), tmp_path / "lora", CPU)
    base = modeling.load_base_model(str(tiny_t5_dir), CPU)

    assert not loaded.training
    assert modeling.count_parameters(loaded)[0] == 0  # frozen for inference
    batch = tokenizer(["Question: does it work?"], return_tensors="pt")
    start = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        expected = trained(**batch, decoder_input_ids=start).logits
        got = loaded(**batch, decoder_input_ids=start).logits
        plain = base(**batch, decoder_input_ids=start).logits
    assert torch.allclose(got, expected)
    assert not torch.allclose(got, plain)


def test_missing_adapter_names_the_stage(tiny_t5_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"not found: .*lora.*`dvc repro train_lora`"):
        modeling.load_adapter_model(str(tiny_t5_dir), tmp_path / "lora", CPU)
    (tmp_path / "prompt").mkdir()
    with pytest.raises(ModelLoadError, match=r"no adapter_config.json.*`dvc repro train_prompt`"):
        modeling.load_adapter_model(str(tiny_t5_dir), tmp_path / "prompt", CPU)
    (tmp_path / "prompt" / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    (tmp_path / "prompt" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="pickle weights, which are refused"):
        modeling.load_adapter_model(str(tiny_t5_dir), tmp_path / "prompt", CPU)


# --- parameter counts ---------------------------------------------------------------------------------


def test_count_parameters_counts_shared_tensors_once() -> None:
    shared = torch.nn.Linear(3, 4)  # 16 parameters, used twice
    frozen = torch.nn.Linear(4, 2)  # 10 parameters
    frozen.requires_grad_(False)
    model = torch.nn.ModuleDict({"a": shared, "b": shared, "frozen": frozen})
    assert modeling.count_parameters(model) == (16, 26)


def test_count_parameters_of_peft_models(tiny_t5_dir: Path) -> None:
    base = modeling.load_base_model(str(tiny_t5_dir), CPU)
    _, base_total = modeling.count_parameters(base)
    # Expected LoRA size from the module shapes: r * (in + out) per adapted projection.
    r = 4
    expected_lora = sum(
        r * (m.in_features + m.out_features)
        for name, m in base.named_modules()
        if name.rsplit(".", 1)[-1] in ("q", "v") and isinstance(m, torch.nn.Linear)
    )
    trainable, total = modeling.count_parameters(_lora(base, r))
    assert trainable == expected_lora > 0
    assert total == base_total + expected_lora

    base = modeling.load_base_model(str(tiny_t5_dir), CPU)
    prompt_config = peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=5)
    prompt_model = peft.get_peft_model(base, prompt_config)
    trainable, total = modeling.count_parameters(prompt_model)
    # The prompt model also holds a reference to the word embeddings: not counted again.
    assert trainable == 5 * prompt_config.num_transformer_submodules * base.config.d_model
    assert total == base_total + trainable


def test_quantization_without_bitsandbytes_names_the_key_to_change(tiny_t5_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # importing it now raises ImportError
    with pytest.raises(ModelLoadError) as err:
        modeling.load_base_model(str(tiny_t5_dir), CPU, quantize="4bit", setting="train_lora.quantize")
    message = str(err.value)
    assert message.startswith("train_lora.quantize=4bit needs bitsandbytes, which cannot run here")
    assert "set train_lora.quantize: none" in message and "\n" not in message


def test_a_4bit_base_has_nf4_layers_computing_in_the_asked_dtype(tiny_t5_dir):
    model = modeling.load_base_model(str(tiny_t5_dir), CPU, quantize="4bit", compute_dtype="float32")
    layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert layers and all(m.weight.quant_type == "nf4" and m.compute_dtype == torch.float32 for m in layers)
    assert all(m.weight.quant_state.nested for m in layers)  # double quantization


def test_a_run_manifest_written_before_precision_was_recorded_still_loads(tmp_path: Path) -> None:
    from pubmedqa_peft.manifest import MANIFEST_FILE, read_manifest

    old = {
        "schema_version": 1,
        "method": "lora",
        "saves": "adapter",
        "base_model": "google/flan-t5-small",
        "model_type": "t5",
        "labels": ["no", "yes"],
        "prompt_template": "v1",
        "max_source_length": 512,
    }
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(old))
    assert read_manifest(tmp_path).precision is None
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**old, "precision": "bf16"}))
    assert read_manifest(tmp_path).precision == "bf16"
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**old, "precision": "fp8"}))
    with pytest.raises(PipelineError, match="not a valid run manifest"):
        read_manifest(tmp_path)
