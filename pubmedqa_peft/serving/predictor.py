"""Answer new questions with trained methods: the :class:`Predictor`.

A ``Predictor`` reads ``models/<method>/run.json`` (:mod:`pubmedqa_peft.manifest`) for
everything it needs (base model, family, labels, prompt template, token budget,
quantization), so a ``models/<method>/`` fetched with ``dvc get`` works without
``params.yaml``. Prompts are fitted and scored by the very functions ``evaluate`` uses
(:func:`pubmedqa_peft.prompts.fit_prompt_encoded`, :func:`pubmedqa_peft.scoring.score_yes_no`),
so an item's probabilities equal ``plots/eval/predictions/<method>.csv`` for the same
record.

How several methods share one base model (checked with peft 0.21.2):

* One ``PeftModel`` holds adapters of a single PEFT type only (``add_adapter`` refuses
  another type, "Cannot combine adapters with different peft types"), and
  ``PeftMixedModel`` mixes LoRA-like types only (not IA3, not prompt learning).
* Prompt and prefix tuning leave the base model's modules untouched, so their
  ``PeftModel`` s wrap the *same* base object as the untuned ``base``.
* LoRA and IA3 inject layers into the model they wrap, which would change the base for
  everyone else; each of these types therefore wraps its own in-memory copy of the base
  (``copy.deepcopy``: the weights are read from disk once).
* Several adapters of one type (say two LoRA runs) share one ``PeftModel``
  (``load_adapter`` + ``set_adapter``).
* A method trained on a quantized base (QLoRA) gets a base loaded that way; full
  fine-tuning is a whole model of its own.

Labels and their order come from the manifests' ``labels`` (``task.labels`` at training
time, e.g. yes/no or yes/no/maybe); probabilities are a softmax over the labels'
log-likelihoods, in the manifest's column order (:mod:`pubmedqa_peft.task`).
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import softmax

from pubmedqa_peft import known_warnings, modeling, scoring
from pubmedqa_peft.data import normalize_whitespace
from pubmedqa_peft.manifest import MANIFEST_FILE, RunManifest
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import TEMPLATE_VERSION, fit_prompt_encoded
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import Task

log = logging.getLogger(__name__)

BASE = "base"
"""Name of the untuned base model among the methods (as in ``metrics/eval.json``)."""

# The base model the way every training stage loads it without quantization.
_FULL_PRECISION = ("none", "float32", "float32")


class PredictError(PipelineError):
    """Anything that stops a prediction; the message is one line saying what to do."""


class BadItemError(PredictError):
    """A bad input item; the message names the item's index and field."""


def _text(item: Mapping[str, Any], key: str, index: int, passages: bool) -> str:
    """One field of an item, whitespace-normalised as the data stage does; passages joined by a space."""
    if key not in item:
        raise BadItemError(f"item {index}: {key!r} is missing")
    value = item[key]
    if passages and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise BadItemError(f"item {index}: {key!r} must be a string or a list of strings")
        text = " ".join(p for p in (normalize_whitespace(v) for v in value) if p)
    elif isinstance(value, str):
        text = normalize_whitespace(value)
    else:
        kinds = "a non-empty string or a list of strings" if passages else "a non-empty string"
        raise BadItemError(f"item {index}: {key!r} must be {kinds}, got {type(value).__name__}")
    if not text:
        raise BadItemError(f"item {index}: {key!r} must be a non-empty string")
    return text


def validate_items(items: Any) -> list[dict[str, Any]]:
    """Check items and bring them to the form the model reads, without loading any model.

    Args:
        items: A list of ``{"question": str, "context": str | list[str]}``; an optional
            ``id`` (string or number) is echoed in the answer. Other keys are ignored.

    Returns:
        One ``{"question", "context"[, "id"]}`` per item: whitespace normalised, a list
        context joined with single spaces (as the data stage joins PubMedQA's passages).

    Raises:
        BadItemError: Naming the first bad item's index and field.
    """
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise BadItemError(f"items must be a list of objects, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise BadItemError(f"item {i}: must be an object with 'question' and 'context', got {type(item).__name__}")
        row = {"question": _text(item, "question", i, False), "context": _text(item, "context", i, True)}
        if "id" in item:
            if isinstance(item["id"], bool) or not isinstance(item["id"], (str, int)):
                raise BadItemError(f"item {i}: 'id' must be a string or an integer")
            row["id"] = item["id"]
        out.append(row)
    return out


def trained_methods(models_dir: Path | str) -> list[str]:
    """The trained methods in ``models_dir`` (subdirectories with a ``run.json``), in registry order.

    Methods the registry does not know come after, by name.

    Raises:
        PredictError: If ``models_dir`` is not a directory.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise PredictError(f"models directory not found: {models_dir}; train with `dvc repro` or fetch one")
    found = [p.name for p in models_dir.iterdir() if (p / MANIFEST_FILE).is_file()]
    # Registry order, as in eval.json and the figures.
    order = {name: i for i, name in enumerate(registry.names())}
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


def check_tau(tau: float | None, what: str = "tau") -> float | None:
    """``tau`` if it is None or a number in [0, 1].

    Raises:
        PredictError: Otherwise.
    """
    if tau is None:
        return None
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= float(tau) <= 1.0:
        raise PredictError(f"{what} must be a number between 0 and 1, got {tau!r}")
    return float(tau)


def read_taus(eval_file: Path | str | None) -> dict[str, float | None]:
    """The tau ``evaluate`` chose on val per method (``test.<method>.tau_target.tau``).

    Args:
        eval_file: ``metrics/eval.json``; None or a missing file gives no taus.

    Returns:
        Method -> tau (None where no threshold reached the target accuracy).

    Raises:
        PredictError: If the file exists but is not an evaluate document.
    """
    if eval_file is None or not Path(eval_file).is_file():
        if eval_file is not None:
            log.info("%s not found: no abstention threshold unless tau is given", eval_file)
        return {}
    try:
        doc = json.loads(Path(eval_file).read_text(encoding="utf-8"))
        return {m: check_tau(v["tau_target"]["tau"]) for m, v in doc["test"].items() if "tau_target" in v}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise PredictError(f"{eval_file}: not a metrics/eval.json written by evaluate ({err})") from None


@dataclass
class _Loaded:
    """One servable method: the model to score with and how to prompt it."""

    manifest: RunManifest
    model: Any
    adapter: str | None  # the PeftModel adapter to activate, when the model holds several
    tau: float | None
    budget: int = 0  # prompt token budget: max_source_length minus the family's answer room


@dataclass
class _Group:
    """Adapters of one PEFT type on one base: one PeftModel."""

    prompt_learning: bool
    """Prompt or prefix tuning: leaves the base's modules untouched."""
    model: Any = None
    adapters: list[str] = field(default_factory=list)


class Predictor:
    """Trained methods on one base model, answering yes/no questions with probabilities.

    The base model is read once; ``base`` (the untuned model) is one more method when
    ``include_base`` is true. See the module docstring for how PEFT types share it.

    ``predict`` may be called from one thread at a time (it switches active adapters).
    """

    def __init__(
        self,
        models_dir: str | Path = "models",
        methods: Sequence[str] | None = None,
        *,
        include_base: bool = False,
        eval_file: str | Path | None = "metrics/eval.json",
        tau: float | None = None,
        device: str = "auto",
        batch_size: int = 8,
        base_model: str | None = None,
        precision: str = "auto",
    ) -> None:
        """Load the base model and every method on it.

        Args:
            models_dir: Directory of ``<method>/`` model directories (each with ``run.json``).
            methods: Which to load; None = every subdirectory with a ``run.json``. ``"base"``
                in the list is the same as ``include_base``.
            include_base: Also serve the untuned base model as method ``base``.
            eval_file: ``metrics/eval.json``: each method's tau is its
                ``test.<method>.tau_target.tau`` (chosen on val by ``evaluate``) when
                present; a missing file means no tau.
            tau: Abstention threshold for every method, overriding ``eval_file``.
            device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
            batch_size: Prompts per scoring batch.
            base_model: Load the base from here instead of the manifests' ``base_model``
                (a local copy of the same model, e.g. on a machine without the hub).
            precision: Scoring precision, as ``evaluate.precision``: ``auto`` (bf16 on a GPU
                with native bf16, fp16 on older GPUs, fp32 on CPU), ``fp32``, ``bf16`` or
                ``fp16``. ``auto`` resolves as ``evaluate.precision``'s default does on the same
                device, so served probabilities match those its tau was chosen on when
                evaluate ran with its default there.

        Raises:
            PredictError: If a model directory is missing or unusable, the methods were
                trained on different base models or with another label set or prompt
                template, or an argument is out of range.
        """
        if batch_size < 1:
            raise PredictError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.models_dir = Path(models_dir)
        try:
            self._load(methods, include_base, eval_file, check_tau(tau), device, base_model, precision)
        except PredictError:
            raise
        except PipelineError as err:  # model loading errors: one type for callers to catch
            raise PredictError(str(err)) from None

    # --- loading -----------------------------------------------------------------------

    def _discover(self, methods: Sequence[str] | None, include_base: bool) -> tuple[list[str], bool]:
        found = trained_methods(self.models_dir)
        if methods is None:
            return found, include_base
        wanted = list(dict.fromkeys(methods))
        include_base = include_base or BASE in wanted
        wanted = [m for m in wanted if m != BASE]
        missing = [m for m in wanted if m not in found]
        if missing:
            listed = ", ".join(found) or "none"
            raise PredictError(
                f"no trained model {missing[0]!r} in {self.models_dir} (trained methods there: {listed})"
            )
        return sorted(wanted, key=found.index), include_base

    def _load(
        self,
        methods: Sequence[str] | None,
        include_base: bool,
        eval_file: str | Path | None,
        tau: float | None,
        device: str,
        base_model: str | None,
        precision: str,
    ) -> None:
        names, include_base = self._discover(methods, include_base)
        all_found = trained_methods(self.models_dir)
        # The base's settings come from a manifest: one of the loaded methods, else any there.
        described = names or all_found[:1]
        if not described:
            raise PredictError(f"no trained model (a directory with {MANIFEST_FILE}) in {self.models_dir}")
        manifests = {n: modeling.check_trained_model(self.models_dir / n) for n in described}
        self._check_compatible(manifests)
        first = manifests[described[0]]
        self.task = Task.of(first.labels)
        """The label set every loaded method answers (from run.json), in column order."""
        self.base_name = first.base_model
        source = base_model or first.base_model
        self.device = modeling.resolve_device(device)
        self.precision = modeling.resolve_precision(precision, self.device, "precision")
        """The resolved scoring precision: ``fp32``, ``bf16`` or ``fp16``."""
        self.tokenizer = modeling.load_tokenizer(source)
        family = modeling.load_family(source)
        if family.name != first.family:
            raise PredictError(f"{source} is a {family.name} model; the methods were trained on a {first.family} one")
        taus = read_taus(eval_file)

        bases: dict[tuple[str, str, str], Any] = {}

        def base_for(key: tuple[str, str, str]) -> Any:
            if key not in bases:
                quantize, compute_dtype, dtype = key
                bases[key] = modeling.load_base_model(
                    source,
                    self.device,
                    getattr(torch, dtype),
                    quantize=quantize,
                    compute_dtype=compute_dtype,
                    setting=f"the quantization recorded in {self.models_dir}/<method>/{MANIFEST_FILE}",
                )
            return bases[key]

        self._methods: dict[str, _Loaded] = {}
        if include_base:
            base_manifest = first.model_copy(update={"method": BASE, "saves": "model", "quantize": "none"})
            self._methods[BASE] = _Loaded(base_manifest, base_for(_FULL_PRECISION), None, None)
        self._load_methods(names, manifests, base_for, include_base)
        for name, entry in self._methods.items():
            entry.tau = tau if tau is not None else taus.get(name)
            chat = getattr(entry.manifest, "chat_template", False)
            max_length = entry.manifest.max_source_length
            entry.budget = family.prompt_budget(self.tokenizer, self.task.labels, max_length, chat)
        self.methods: list[str] = list(self._methods)
        log.info("predictor ready: %s on %s (%s)", ", ".join(self.methods), self.device, self.precision)

    def _check_compatible(self, manifests: Mapping[str, RunManifest]) -> None:
        bases = {m.base_model for m in manifests.values()}
        if len(bases) > 1:
            listed = "; ".join(f"{n}: {m.base_model}" for n, m in manifests.items())
            raise PredictError(f"the methods were trained on different base models ({listed}); load them separately")
        label_sets = {tuple(m.labels) for m in manifests.values()}
        if len(label_sets) > 1:
            listed = "; ".join(f"{n}: {list(m.labels)}" for n, m in manifests.items())
            raise PredictError(f"the methods were trained for different label sets ({listed}); load them separately")
        for name, m in manifests.items():
            where = self.models_dir / name / MANIFEST_FILE
            try:
                Task.of(m.labels)
            except ValueError as err:
                raise PredictError(f"{where}: {err}") from None
            if m.prompt_template != TEMPLATE_VERSION:
                raise PredictError(
                    f"{where}: trained with prompt template {m.prompt_template}, this code has {TEMPLATE_VERSION}; "
                    f"retrain with `dvc repro train_{name}`"
                )

    def _load_methods(
        self, names: list[str], manifests: Mapping[str, RunManifest], base_for: Any, include_base: bool
    ) -> None:
        from peft import PeftConfig

        groups: dict[tuple[tuple[str, str, str], str], _Group] = {}
        group_of: dict[str, tuple[tuple[str, str, str], str]] = {}
        for name in names:
            m = manifests[name]
            if m.saves == "model":
                continue
            try:
                config = PeftConfig.from_pretrained(str(self.models_dir / name))
            except (OSError, ValueError, TypeError) as err:
                raise PredictError(f"{self.models_dir / name}: unreadable adapter config ({err})") from None
            gkey = ((m.quantize, m.compute_dtype, m.dtype), str(config.peft_type))
            groups.setdefault(gkey, _Group(prompt_learning=config.is_prompt_learning)).adapters.append(name)
            group_of[name] = gkey
        # Which base each group wraps, decided before anything wraps one (so copies are clean):
        # prompt-learning types and `base` share the loaded base; an injected type (LoRA, IA3)
        # rewrites its base's layers, so it takes a copy unless it is the base's last user.
        shared = {k[0] for k, g in groups.items() if g.prompt_learning} | ({_FULL_PRECISION} if include_base else set())
        pending = Counter(k[0] for k, g in groups.items() if not g.prompt_learning)
        bases = {}
        for gkey, group in groups.items():
            base = base_for(gkey[0])
            if not group.prompt_learning:
                pending[gkey[0]] -= 1
                if gkey[0] in shared or pending[gkey[0]] > 0:
                    base = copy.deepcopy(base)
            bases[gkey] = base
        for gkey, group in groups.items():
            group.model = self._attach(bases[gkey], group.adapters, manifests)
        for name in names:
            m = manifests[name]
            if name not in group_of:
                dtype = getattr(torch, m.dtype)
                model = modeling.load_base_model(str(self.models_dir / name), self.device, dtype)
                self._methods[name] = _Loaded(m, model, None, None)
            else:
                group = groups[group_of[name]]
                adapter = _adapter_name(name) if len(group.adapters) > 1 else None
                self._methods[name] = _Loaded(m, group.model, adapter, None)

    def _attach(self, base: Any, names: list[str], manifests: Mapping[str, RunManifest]) -> Any:
        """One PeftModel on ``base`` holding the adapters ``names`` (all of one PEFT type)."""
        from peft import PeftModel

        model = None
        for name in names:
            directory = self.models_dir / name
            log.info("loading adapter %s from %s", name, directory)
            try:
                with known_warnings.library_deprecations():
                    if model is None:
                        model = PeftModel.from_pretrained(
                            base, str(directory), adapter_name=_adapter_name(name), use_safetensors=True
                        )
                    else:
                        model.load_adapter(str(directory), adapter_name=_adapter_name(name), use_safetensors=True)
            except (OSError, ValueError, KeyError, RuntimeError) as err:
                raise PredictError(
                    f"could not load the adapter in {directory} onto {manifests[name].base_model!r}: "
                    f"{type(err).__name__}: {err}"
                ) from None
        if manifests[names[0]].quantize == "none":
            model.to(self.device)  # a quantized base is placed by its device_map and cannot move
        return model.eval()

    # --- answering ---------------------------------------------------------------------

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per loaded method: its ``run.json`` contents and the ``tau`` it abstains below."""
        return {n: {**e.manifest.model_dump(mode="json"), "tau": e.tau} for n, e in self._methods.items()}

    def validate(self, items: Any) -> list[dict[str, Any]]:
        """:func:`validate_items` (the item checks alone, for servers to call before queueing)."""
        return validate_items(items)

    def resolve_method(self, method: str | None) -> str:
        """The method ``predict`` would use for ``method``.

        Raises:
            PredictError: If ``method`` is not loaded, or is None while several are.
        """
        if method is None:
            if len(self.methods) == 1:
                return self.methods[0]
            raise PredictError(f"several methods are loaded ({', '.join(self.methods)}): name one")
        if method not in self._methods:
            raise PredictError(f"unknown method {method!r}; loaded: {', '.join(self.methods)}")
        return method

    def predict(
        self, items: Sequence[Mapping[str, Any]], method: str | None = None, *, tau: float | None = None
    ) -> list[dict[str, Any]]:
        """Answer each item with one method.

        Args:
            items: ``[{"question": str, "context": str | list[str]}, ...]`` (see :func:`validate_items`).
            method: A loaded method; None = the only one loaded.
            tau: Abstention threshold for this call, overriding the method's (0 never abstains).

        Returns:
            One answer per item, in order: ``{"label", "probabilities": {label: p},
            "confidence", "abstained", "method", "model"}`` (plus ``"id"`` when the item had one).

        Raises:
            BadItemError: For a bad item (nothing is scored).
            PredictError: For an unknown method or a scoring failure.
        """
        rows = validate_items(items)
        name = self.resolve_method(method)
        entry = self._methods[name]
        tau = check_tau(tau) if tau is not None else entry.tau
        if not rows:
            return []
        chat = getattr(entry.manifest, "chat_template", False)
        fitted = []
        for i, row in enumerate(rows):
            try:
                fitted.append(
                    fit_prompt_encoded(
                        self.tokenizer, row["question"], row["context"], entry.budget, str(i), chat, self.task
                    )
                )
            except ValueError as err:
                raise BadItemError(f"item {i}: 'question' is too long for method {name!r} ({err})") from None
        # What evaluate scores: a seq2seq model the ids computed while fitting; a decoder-only
        # model the texts (its answers are split from prompt + answer encoded together).
        prompts = [p.text for p in fitted] if scoring.is_causal(entry.model) else [p.input_ids for p in fitted]
        if entry.adapter is not None:
            entry.model.set_adapter(entry.adapter, inference_mode=True)
        try:
            loglik = scoring.score_yes_no(
                entry.model,
                self.tokenizer,
                prompts,
                self.batch_size,
                entry.budget,
                progress=False,
                chat=chat,
                labels=self.task.labels,
                precision=self.precision,
            )
        except (ValueError, RuntimeError) as err:
            raise PredictError(f"scoring with {name!r} failed: {type(err).__name__}: {err}") from None
        return [self._answer(p, name, tau, row) for p, row in zip(softmax(loglik, axis=1), rows, strict=True)]

    def _answer(self, probs: np.ndarray, method: str, tau: float | None, row: Mapping[str, Any]) -> dict[str, Any]:
        best = int(np.argmax(probs))  # a tie goes to the first label, as evaluation.predict does
        # Rounded as evaluation.confidence: a confidence of exactly tau counts as covered.
        confidence = round(float(probs[best]), 12)
        answer: dict[str, Any] = {
            "label": self.task.labels[best],
            "probabilities": {label: float(p) for label, p in zip(self.task.labels, probs, strict=True)},
            "confidence": confidence,
            "abstained": tau is not None and confidence < tau,
            "method": method,
            "model": self.base_name,
        }
        if "id" in row:
            answer["id"] = row["id"]
        return answer


def _adapter_name(method: str) -> str:
    # Not the method's own name: PEFT warns (and may re-initialise weights) when an adapter
    # name is contained in its type's parameter prefix ("lora" in "lora_").
    return f"method_{method}"
