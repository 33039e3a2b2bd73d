"""Which model runs where: device choice, and loading the base model, tokenizer and adapters.

``model.name`` is either a Hugging Face hub id (default ``google/flan-t5-small``) or a
local directory in the ordinary Hugging Face layout (``config.json``,
``model.safetensors``, tokenizer files). A hub model is first fetched into (or found in)
the Hugging Face cache and then loaded from that directory exactly like a local one:
Auto classes, ``trust_remote_code=False``, safetensors only, so pickle weights are never
loaded.

Offline behaviour: before touching the hub, one metadata request without retries
(:func:`check_hub`) asks whether it answers. ``huggingface_hub`` itself retries a failed
request five times with back-off (about 23 s per file when DNS fails, over 80 s when
packets are dropped), and a model load asks for several files, so without the
probe an offline run would stall for minutes before failing. If the hub does not answer,
only the local Hugging Face cache is tried, and if the model is not there a
:class:`ModelLoadError` explains how to use a local directory instead. With
``HF_HUB_OFFLINE=1`` the probe is skipped and only the cache is used.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import torch

from pubmedqa_peft import families, known_warnings
from pubmedqa_peft.config import ResolvedPrecision
from pubmedqa_peft.stage import PipelineError

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")

HUB_PROBE_TIMEOUT_S = 10.0
"""Seconds the hub probe waits for an answer (``HF_HUB_ETAG_TIMEOUT`` overrides it)."""

# Files a local model directory must hold, in the order a user would check them.
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# fast tokenizers (tokenizer.json), SentencePiece (T5's spiece.model, Llama's tokenizer.model),
# and BPE vocabularies of the slow tokenizers (BioGPT: vocab.json + merges.txt)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model", "vocab.json")
HUB_FILE_PATTERNS = ("*.json", "*.safetensors", "*.model", "merges.txt")
"""What is fetched of a hub model: configs, tokenizer files, safetensors weights (never pickles)."""
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHT_FILE = "adapter_model.safetensors"
ADAPTER_PICKLE_FILE = "adapter_model.bin"
OFFLINE_MODEL_DIR = "$HOME/.cache/pubmedqa-peft/models/tiny-t5"
"""Where the README and load errors say to build the random-weight smoke-test model (shell syntax).

Absolute, so one ``model.name`` works in direct runs and in queued experiments (which run in a
copy under ``.dvc/tmp/exps/``, where relative paths point elsewhere); outside the project, so
neither git nor DVC sees it.
"""


class ModelLoadError(PipelineError):
    """A model, tokenizer or adapter could not be loaded; the message says what to do."""


class DeviceError(PipelineError):
    """The requested device does not exist on this machine."""


def local_directory_advice() -> str:
    """How to run with a local model directory instead of the hub (appended to load errors)."""
    return (
        "To run without the Hugging Face hub, set model.name to a local model directory "
        "(config.json, model.safetensors, tokenizer files):\n"
        "  - smoke test with a random-weight model: "
        f'`python -m pubmedqa_peft.random_model tiny-t5 "{OFFLINE_MODEL_DIR}"`, then '
        f'`dvc exp run -S "model.name={OFFLINE_MODEL_DIR}"`;\n'
        "  - the real model: on a machine with internet run "
        "`hf download google/flan-t5-small --local-dir flan-t5-small` "
        "(older huggingface_hub: `huggingface-cli download google/flan-t5-small --local-dir flan-t5-small`), "
        "copy that directory here and run `dvc exp run -S model.name=/path/to/flan-t5-small`."
    )


def resolve_device(preference: str) -> torch.device:
    """Pick the torch device for ``model.device``.

    Args:
        preference: ``auto`` (CUDA, else Apple MPS, else CPU) or an explicit
            ``cpu``, ``cuda`` or ``mps``.

    Returns:
        The device.

    Raises:
        DeviceError: For an unknown name or an explicit device this machine lacks.
    """
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if preference == "auto":
        device = torch.device("cuda" if cuda else "mps" if mps else "cpu")
    elif preference == "cpu":
        device = torch.device("cpu")
    elif preference in ("cuda", "mps"):
        if not (cuda if preference == "cuda" else mps):
            raise DeviceError(
                f"model.device={preference} but no {preference.upper()} device is available here; "
                "use model.device=auto or cpu"
            )
        device = torch.device(preference)
    else:
        raise DeviceError(f"unknown model.device {preference!r}; allowed: {', '.join(DEVICES)}")
    log.info("device: %s (requested %s)", device, preference)
    return device


def set_threads(n: int) -> None:
    """Set the number of CPU threads torch uses.

    Args:
        n: Thread count; 0 leaves torch's default (one per core).
    """
    if n < 0:
        raise ValueError(f"thread count must be >= 0, got {n}")
    if n > 0:
        torch.set_num_threads(n)
    log.info("torch CPU threads: %d%s", torch.get_num_threads(), "" if n else " (default)")


def choose_dtype(device: torch.device) -> torch.dtype:
    """The dtype the base model's weights are loaded in: float32 on every device.

    Why not bfloat16 on CUDA: training and scoring run under autocast there
    (:func:`resolve_precision`), which gives the speed; bf16 *weights* would also put
    trainable soft prompts in bf16 and leave no way to score in float32. T5 overflows in
    float16.

    Args:
        device: Where the model will run.

    Returns:
        ``torch.float32``.
    """
    del device  # same answer everywhere, see the docstring; kept so callers need not change
    return torch.float32


PRECISIONS = get_args(ResolvedPrecision)
"""What a ``precision`` setting resolves to (``auto`` is resolved per device by :func:`resolve_precision`)."""


class PrecisionError(PipelineError):
    """A ``precision`` setting this device cannot run."""


def resolve_precision(setting: str, device: torch.device, key: str) -> str:
    """What a ``train.precision`` / ``evaluate.precision`` setting means on ``device``.

    Mixed precision keeps the weights in float32 (:func:`choose_dtype`) and runs the
    forward (and, in training, the backward) under ``torch.autocast``: the Trainer's
    ``bf16`` / ``fp16`` flags in training, :func:`pubmedqa_peft.scoring.autocast` in scoring.

    Args:
        setting: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        device: Where the model runs.
        key: The params key behind ``setting``, named in errors (``train.precision``).

    Returns:
        ``fp32``, ``bf16`` or ``fp16``. ``auto`` gives bf16 on a GPU with native bf16
        (CUDA compute capability 8 and up: emulated bf16 on older GPUs is slower than
        fp32), fp16 (with loss scaling in training) on older CUDA GPUs, and fp32 on CPU
        and MPS, where the numbers then stay exactly those of a float32 run.

    Raises:
        PrecisionError: For fp16 on a CPU, or bf16 on a CUDA GPU without native bf16.
    """
    if setting not in ("auto", *PRECISIONS):
        raise PrecisionError(f"{key}={setting!r} is not a precision; allowed: auto, {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    native_bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    if setting == "auto":
        precision = ("bf16" if native_bf16 else "fp16") if cuda else "fp32"
    elif setting == "fp16" and device.type == "cpu":
        # fp16 needs loss scaling (its range is narrow) and is slow on CPUs; bf16 has float32's range.
        raise PrecisionError(f"{key}=fp16 is not supported on a CPU; set {key}: bf16 (or fp32 or auto)")
    elif setting == "bf16" and cuda and not native_bf16:
        raise PrecisionError(
            f"{key}=bf16 but this GPU has no native bfloat16 (compute capability below 8.0); "
            f"set {key}: fp16 (or auto or fp32)"
        )
    else:
        precision = setting
    log.info("%s: %s on %s (requested %s)", key, precision, device.type, setting)
    return precision


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be meant as a filesystem path, never as a hub id."""
    return name.startswith((".", "/", "~", "\\")) or "\\" in name or name.count("/") > 1 or Path(name).is_absolute()


def _check_local_dir(path: Path, need_weights: bool, need_tokenizer: bool) -> None:
    """Fail early, naming the missing file, if ``path`` is not a usable model directory."""
    if not (path / CONFIG_FILE).is_file():
        raise ModelLoadError(
            f"model directory {path} has no {CONFIG_FILE}: not a Hugging Face model directory.\n"
            + local_directory_advice()
        )
    if need_weights and not any((path / f).is_file() for f in WEIGHT_FILES):
        pickles = [f for f in PICKLE_WEIGHT_FILES if (path / f).is_file()]
        if pickles:
            raise ModelLoadError(
                f"model directory {path} has only pickle weights ({', '.join(pickles)}); they are refused "
                "because unpickling can run arbitrary code. Provide model.safetensors instead (the hub "
                "repository of most models has one; or convert a trusted checkpoint once with "
                "`model.save_pretrained(dir, safe_serialization=True)`)."
            )
        raise ModelLoadError(
            f"model directory {path} has no weights ({' or '.join(WEIGHT_FILES)}).\n" + local_directory_advice()
        )
    if need_tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(
            f"model directory {path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}).\n" + local_directory_advice()
        )


def _probe_timeout() -> float:
    value = os.environ.get("HF_HUB_ETAG_TIMEOUT")
    try:
        return float(value) if value else HUB_PROBE_TIMEOUT_S
    except ValueError:
        return HUB_PROBE_TIMEOUT_S


@functools.lru_cache(maxsize=32)
def check_hub(name: str) -> bool:
    """Ask the hub once, without retries, whether it serves model ``name``.

    The answer is cached for the process, so the tokenizer and the model of one run
    share a single probe.

    Args:
        name: A hub id such as ``google/flan-t5-small``.

    Returns:
        True if the hub answered and has the model; False if the hub could not be
        reached (no network, DNS failure, time-out, server error) or offline mode is on.

    Raises:
        ModelLoadError: If the hub answered that the model (or its ``config.json``) does
            not exist or is gated, or if ``name`` is not a valid hub id.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    if constants.is_offline_mode():
        log.info("HF_HUB_OFFLINE is set: not contacting the hub for %s", name)
        return False
    try:
        url = hf_hub_url(name, CONFIG_FILE)
        get_hf_file_metadata(url, timeout=_probe_timeout())
    except HFValidationError as err:
        raise ModelLoadError(
            f"model.name={name!r} is neither an existing local directory nor a valid hub id ({err}).\n"
            + local_directory_advice()
        ) from None
    except RepositoryNotFoundError:
        # Also raised for gated and private repositories when no token grants access.
        raise ModelLoadError(
            f"the Hugging Face hub has no model {name!r} (or it is private/gated and no token grants access)"
            f"{_also_no_dir(name)}.\n" + local_directory_advice()
        ) from None
    except EntryNotFoundError:
        raise ModelLoadError(
            f"hub model {name!r} has no {CONFIG_FILE}: not a transformers model.\n" + local_directory_advice()
        ) from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else 0
        if status < 500:
            raise ModelLoadError(
                f"the Hugging Face hub refused {name!r}: {err}.\n" + local_directory_advice()
            ) from None
        log.warning("the Hugging Face hub answered %d for %s; trying the local cache only", status, name)
        return False
    except Exception as err:  # network errors come from the HTTP client (httpx), whose classes vary by version
        log.warning(
            "the Hugging Face hub is unreachable (%s: %s); trying the local cache only", type(err).__name__, err
        )
        return False
    return True


def _also_no_dir(name: str) -> str:
    return f", and there is no local directory {name!r} either" if "/" in name else ""


def _resolve(name: str, need_weights: bool, need_tokenizer: bool) -> Path:
    """The local directory to load ``name`` from: the directory itself or its hub snapshot.

    Everything is loaded from a local directory: a hub model is first fetched (or found
    in the cache) with ``snapshot_download``. Letting ``from_pretrained`` fetch by hub id
    instead would, offline, still ask the hub for an ``adapter_config.json`` with five
    retries (transformers 5.23), even with ``local_files_only=True``.
    """
    from huggingface_hub import snapshot_download

    path = Path(name).expanduser()
    if path.is_dir():
        _check_local_dir(path, need_weights, need_tokenizer)
        return path
    if path.exists():
        raise ModelLoadError(f"model.name={name!r} is a file, not a model directory.\n" + local_directory_advice())
    if _looks_like_path(name):
        raise ModelLoadError(
            f"model directory not found: {name} (resolved to {path.resolve()}).\n" + local_directory_advice()
        )
    online = check_hub(name)
    try:
        snapshot = Path(snapshot_download(name, allow_patterns=HUB_FILE_PATTERNS, local_files_only=not online))
    except Exception as err:  # a cache miss is an OSError; network failures come from httpx
        if online:
            reason = f"downloading it from the Hugging Face hub failed ({type(err).__name__}: {err})"
        else:
            reason = f"the hub is unreachable and {name!r} is not in the local Hugging Face cache{_also_no_dir(name)}"
        raise ModelLoadError(f"could not load model {name!r}: {reason}.\n" + local_directory_advice()) from None
    log.info("hub model %s: %s %s", name, "downloaded to" if online else "using the cached copy in", snapshot)
    _check_local_dir(snapshot, need_weights, need_tokenizer)
    return snapshot


def _load_error(what: str, name: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load the {what} of {name!r}: {type(err).__name__}: {err}.\n" + local_directory_advice()
    )


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load the tokenizer of ``model.name``.

    Args:
        name: Hub id or local model directory.

    Returns:
        The tokenizer (for T5: ``</s>`` appended on encode, ``<pad>`` = 0), prepared by
        :func:`pubmedqa_peft.families.prepare_tokenizer` (a pad token; right padding for
        decoder-only models).

    Raises:
        ModelLoadError: If the directory is missing or incomplete, or the hub cannot
            provide the tokenizer; the message says how to use a local directory.
    """
    from transformers import AutoTokenizer

    source = _resolve(name, need_weights=False, need_tokenizer=True)
    log.info("loading tokenizer from %s", source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", name, err) from None
    return families.prepare_tokenizer(tokenizer, load_family(name))


def load_family(name: str) -> families.Family:
    """The family of ``model.name`` (seq2seq or causal), read from its ``config.json``.

    Raises:
        ModelLoadError: If the config cannot be read.
        UnsupportedModelError: For an architecture the pipeline does not support.
    """
    return families.family_of(_load_config(name), f"model.name={name!r}")


def _load_config(name: str) -> Any:
    """The ``config.json`` of ``model.name``, as its ``PretrainedConfig``."""
    from transformers import AutoConfig

    source = _resolve(name, need_weights=False, need_tokenizer=False)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as err:
        raise _load_error("config", name, err) from None


def dropout_settings(config: Any) -> list[str]:
    """The keys of a model config that hold a dropout probability.

    Transformers names them after the architecture (T5 ``dropout_rate``, GPT-2
    ``resid_pdrop``/``embd_pdrop``/``attn_pdrop``, Llama, Qwen2 and Mistral
    ``attention_dropout``, BioGPT ``hidden_dropout_prob``, ...), always with ``dropout``
    or ``_pdrop`` in the name; BioGPT's ``layerdrop`` (skipping whole layers) is another
    thing and is not matched. Keys set to None (no such dropout) are left out.

    Args:
        config: A ``PretrainedConfig``.

    Returns:
        The matching keys, sorted.
    """
    return sorted(
        key
        for key, value in config.to_dict().items()
        if ("dropout" in key or key.endswith("_pdrop"))
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    )


def skips_layers(config: Any) -> bool:
    """Whether the model skips whole layers at random while training (LayerDrop above 0).

    Only then can a training step leave trainable parameters unused, which DDP must be told
    to search for (``find_unused_parameters``); every method on every supported family uses
    all its trainable parameters in each step otherwise (tests/test_training.py and
    tests/test_families.py check it). BioGPT has ``layerdrop`` (0 in its checkpoint).

    Args:
        config: A ``PretrainedConfig``.
    """
    return any(
        key.endswith("layerdrop") and isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        for key, value in config.to_dict().items()
    )


QUANTIZATIONS = ("none", "4bit", "8bit")


def quantization_config(quantize: str, compute_dtype: str, setting: str) -> Any:
    """The bitsandbytes configuration of a quantized base model, checking that bitsandbytes runs here.

    4-bit is QLoRA's NF4 with double quantization (the quantization constants quantized
    too) computing in ``compute_dtype``; 8-bit is LLM.int8.

    Args:
        quantize: ``4bit`` or ``8bit``.
        compute_dtype: ``bfloat16``, ``float16`` or ``float32``.
        setting: The params key that asked for it, named in errors (``train_lora.quantize``).

    Returns:
        A ``transformers.BitsAndBytesConfig``.

    Raises:
        ModelLoadError: If bitsandbytes is missing or cannot run on this machine.
    """
    try:
        import bitsandbytes  # noqa: F401 - imported to check that it loads on this machine
    except Exception as err:  # ImportError, or a native library that fails to load
        raise ModelLoadError(
            f"{setting}={quantize} needs bitsandbytes, which cannot run here ({type(err).__name__}: {err}); "
            f"set {setting}: none (or install bitsandbytes on a CUDA or x86-64 AVX2 machine)"
        ) from None
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
        )
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"unknown quantization {quantize!r}; allowed: {', '.join(QUANTIZATIONS)}")


def load_base_model(
    name: str,
    device: torch.device,
    dtype: torch.dtype | None = None,
    *,
    quantize: str = "none",
    compute_dtype: str = "float32",
    setting: str = "quantize",
    dropout: float | None = None,
) -> PreTrainedModel:
    """Load the base model of ``model.name`` (or a fully fine-tuned one), of its family's Auto class.

    Args:
        name: Hub id or local model directory.
        device: Where the model is moved.
        dtype: Weight dtype; None chooses with :func:`choose_dtype` (float32).
        quantize: ``none``, or ``4bit`` / ``8bit`` to load the linear layers quantized
            by bitsandbytes (QLoRA); see :func:`quantization_config`.
        compute_dtype: Compute dtype of 4-bit layers.
        setting: The params key behind ``quantize``, named in errors.
        dropout: ``train.model_dropout``: None keeps the config's dropout probabilities;
            a number replaces every one of them (:func:`dropout_settings`), so that the
            model's modules and attention read it while training.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ModelLoadError: If the directory is missing, incomplete or holds only pickle
            weights, the hub cannot provide the model, or quantization cannot run here.
    """
    import transformers

    config = _load_config(name)  # read once: it names the family and holds the dropout keys
    family = families.family_of(config, f"model.name={name!r}")
    auto_class = getattr(transformers, family.auto_class)
    source = _resolve(name, need_weights=True, need_tokenizer=False)
    dtype = dtype or choose_dtype(device)
    extra: dict[str, Any] = {}
    if quantize != "none":
        extra = {
            "quantization_config": quantization_config(quantize, compute_dtype, setting),
            "device_map": {"": device},
        }
    if dropout is not None:
        # Keyword arguments that name config keys override the config before the modules
        # are built: T5's and Llama's attention read the probability from a float, not
        # from an nn.Dropout module, so changing the modules afterwards would miss them.
        keys = dropout_settings(config)
        if keys:
            extra.update(dict.fromkeys(keys, dropout))
            log.info("dropout of the base model set to %g in %s (train.model_dropout)", dropout, ", ".join(keys))
        else:
            log.warning("train.model_dropout=%g changes nothing: %s has no dropout settings", dropout, name)
    log.info(
        "loading base model from %s (%s%s on %s)",
        source,
        str(dtype).removeprefix("torch."),
        "" if quantize == "none" else f", linear layers {quantize} computing in {compute_dtype}",
        device,
    )
    try:
        with known_warnings.untied_head_load():
            model = auto_class.from_pretrained(
                source, trust_remote_code=False, use_safetensors=True, dtype=dtype, local_files_only=True, **extra
            )
    except (OSError, ValueError) as err:
        raise _load_error("weights", name, err) from None
    if quantize == "none":
        model.to(device)  # a quantized model is placed by device_map and cannot be moved
    model.eval()
    from pubmedqa_peft import fastpath

    applied = fastpath.enable(model)
    if applied:
        log.info("fast paths (same results up to float rounding): %s", "; ".join(applied))
    lm_head = model.get_output_embeddings()
    if lm_head is not None and lm_head.weight is not model.get_input_embeddings().weight:
        log.info("output head is untied from the input embeddings (as in T5 v1.1 checkpoints)")
    _, total = count_parameters(model)
    log.info("base model: %s (%s family), %d parameters", type(model).__name__, family.name, total)
    return model


def base_model_revision(name: str) -> str | None:
    """The hub commit that ``name`` resolves to in the local cache, or None for a local directory.

    Args:
        name: ``model.name``.

    Returns:
        The snapshot's commit hash (its directory name in the Hugging Face cache), or None.
    """
    if Path(name).expanduser().is_dir():
        return None
    source = _resolve(name, need_weights=False, need_tokenizer=False)
    return source.name if source.parent.name == "snapshots" else None


def check_trained_model(model_dir: Path | str) -> Any:
    """Check, without loading anything, that ``model_dir`` holds a complete trained model.

    Evaluation calls this for every method before its first expensive step, so a missing
    or pickle-only adapter stops it at once rather than after the other methods were scored.

    Args:
        model_dir: A directory written by ``python -m stages.train <method>``.

    Returns:
        Its :class:`~pubmedqa_peft.manifest.RunManifest`.

    Raises:
        ModelLoadError: Naming what is missing and the stage that makes it.
    """
    from pubmedqa_peft.manifest import read_manifest, training_stage

    model_dir = Path(model_dir)
    stage = training_stage(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"trained model directory not found: {model_dir}; train it with `{stage}`")
    try:
        manifest = read_manifest(model_dir)
    except PipelineError as err:
        raise ModelLoadError(str(err)) from None
    if manifest.saves == "model":
        _check_local_dir(model_dir, need_weights=True, need_tokenizer=False)
        return manifest
    if not (model_dir / ADAPTER_CONFIG_FILE).is_file():
        raise ModelLoadError(
            f"{model_dir} has no {ADAPTER_CONFIG_FILE}: not a complete PEFT adapter; retrain it with `{stage}`"
        )
    if not (model_dir / ADAPTER_WEIGHT_FILE).is_file():
        pickles = (model_dir / ADAPTER_PICKLE_FILE).is_file()
        pickle_note = " (it has pickle weights, which are refused)" if pickles else ""
        raise ModelLoadError(f"{model_dir} has no {ADAPTER_WEIGHT_FILE}{pickle_note}; retrain it with `{stage}`")
    return manifest


def load_trained_model(model_dir: Path | str, device: torch.device) -> Any:
    """Load what a training stage wrote to ``models/<method>``, as its ``run.json`` describes it.

    A PEFT adapter is loaded onto its base model, quantized as it was in training; a
    fully fine-tuned model is loaded on its own.

    Args:
        model_dir: A directory written by ``python -m stages.train <method>``.
        device: Where the model runs.

    Returns:
        The model in eval mode.

    Raises:
        ModelLoadError: If the directory, its manifest or its weights are missing or unusable.
    """
    manifest = check_trained_model(model_dir)
    model_dir = Path(model_dir)
    setting = f"the quantization recorded in {model_dir}/run.json"
    if manifest.saves == "model":
        return load_base_model(str(model_dir), device)
    return load_adapter_model(
        manifest.base_model,
        model_dir,
        device,
        quantize=manifest.quantize,
        compute_dtype=manifest.compute_dtype,
        setting=setting,
    )


def load_adapter_model(
    base_name: str,
    adapter_dir: Path | str,
    device: torch.device,
    dtype: torch.dtype | None = None,
    *,
    quantize: str = "none",
    compute_dtype: str = "float32",
    setting: str = "quantize",
) -> PeftModel:
    """Load a base model with a trained PEFT adapter on top, for inference.

    Args:
        base_name: Hub id or local directory of the base model (``model.name``).
        adapter_dir: Directory written by a ``train_<method>`` stage (``models/<method>``).
        device: Where the model is moved.
        dtype: Weight dtype of the base model; None chooses with :func:`choose_dtype`.
        quantize: Quantization of the base model (see :func:`load_base_model`).
        compute_dtype: Compute dtype of 4-bit layers.
        setting: Where ``quantize`` came from, named in errors.

    Returns:
        The adapted model in eval mode on ``device``.

    Raises:
        ModelLoadError: If the adapter directory, its config or its safetensors weights
            are missing (naming the stage that produces them), or the base model fails.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    stage = f"dvc repro train_{adapter_dir.name}"
    if not adapter_dir.is_dir():
        raise ModelLoadError(f"adapter directory not found: {adapter_dir}; train it first with `{stage}`")
    if not (adapter_dir / ADAPTER_CONFIG_FILE).is_file():
        raise ModelLoadError(
            f"{adapter_dir} has no {ADAPTER_CONFIG_FILE}: not a complete PEFT adapter; retrain it with `{stage}`"
        )
    if not (adapter_dir / ADAPTER_WEIGHT_FILE).is_file():
        pickle_note = (
            " (it has pickle weights, which are refused)" if (adapter_dir / ADAPTER_PICKLE_FILE).is_file() else ""
        )
        raise ModelLoadError(f"{adapter_dir} has no {ADAPTER_WEIGHT_FILE}{pickle_note}; retrain it with `{stage}`")
    base = load_base_model(base_name, device, dtype, quantize=quantize, compute_dtype=compute_dtype, setting=setting)
    log.info("loading adapter from %s", adapter_dir)
    try:
        with known_warnings.library_deprecations():
            model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False, use_safetensors=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        # RuntimeError: shape mismatch, e.g. an adapter trained on another base model.
        raise ModelLoadError(
            f"could not load the adapter in {adapter_dir} onto {base_name!r}: {type(err).__name__}: {err}. "
            f"If model.name changed since training, retrain with `{stage}`"
        ) from None
    if quantize == "none":
        model.to(device)
    model.eval()
    _, total = count_parameters(model)
    log.info("adapter model: %d parameters (base + adapter)", total)
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Count trainable and total parameters, each tensor once.

    Tied weights (T5's shared input embeddings, PEFT's reference to the word
    embeddings) are one ``Parameter`` object seen under several names;
    ``Module.parameters()`` yields each object once, so nothing is counted twice. For a
    PEFT model the total is base plus adapter parameters.

    Args:
        model: Any torch module, e.g. a transformers or PEFT model.

    Returns:
        ``(trainable, total)`` element counts.
    """
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
