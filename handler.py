"""Serverless entry point: a custom handler for Hugging Face Inference Endpoints.

Inference Endpoints load ``handler.py`` from the root of a model repository, build
``EndpointHandler(path)`` once with ``path`` the repository's directory, and call it with
each request's JSON body. This one wraps :class:`pubmedqa_peft.serving.predictor.Predictor`.

Repository layout to upload (a model repository on the hub)::

    handler.py                    this file
    requirements.txt              this project's requirements.txt (its exact pins), without the
                                  `-e .` line if it has one
    pubmedqa_peft/                the library package, copied from this project
    models/<method>/run.json      one directory per method to serve, as `dvc repro` (or
    models/<method>/adapter_config.json           `dvc get <repo> models/<method>`) wrote it:
    models/<method>/adapter_model.safetensors     a PEFT adapter, or a whole model (full)
    metrics/eval.json             optional: the tau `evaluate` chose per method (else never abstain)
    base_model/                   optional: the base model's files (config.json, model.safetensors,
                                  tokenizer files) when run.json's `base_model` is a local path the
                                  endpoint cannot see; a hub id (google/flan-t5-small) is fetched
                                  from the hub instead

Request body: ``{"inputs": ITEM or [ITEM, ...], "parameters": {"method": str, "tau": float}}``
with ``ITEM = {"question": str, "context": str or [str, ...]}`` (an optional ``id`` is
echoed). ``parameters`` is optional: ``method`` defaults to the ``PUBMEDQA_METHOD``
environment variable, else to the only method in ``models/``; ``tau`` overrides the
method's threshold for this request. The answer is a list with one object per item::

    {"label": "yes", "probabilities": {"no": 0.18, "yes": 0.82}, "confidence": 0.82,
     "abstained": false, "method": "lora", "model": "google/flan-t5-small"}

A bad request raises an exception whose one-line message names the item and field; the
endpoint returns it as an error response. Research use only, not medical advice.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# The endpoint imports this file by path; the package copied beside it must be importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from pubmedqa_peft.serving.predictor import (  # noqa: E402
    BASE,
    BadItemError,
    PredictError,
    Predictor,
    check_tau,
    trained_methods,
)

PARAMETERS = ("method", "tau")
"""Keys allowed in a request's ``parameters``."""


class EndpointHandler:
    """The Inference Endpoints handler: ``EndpointHandler(path)(data) -> list of answers``."""

    def __init__(self, path: str = "") -> None:
        """Load every method under ``<path>/models`` on one base model.

        Args:
            path: The repository directory (the endpoint passes it; "" = the working directory).

        Raises:
            PredictError: If the models cannot be loaded (one line saying why).
        """
        root = Path(path or ".")
        base = root / "base_model"
        self.default_method = os.environ.get("PUBMEDQA_METHOD") or None
        found = trained_methods(root / "models")
        if self.default_method is not None and self.default_method not in [*found, BASE]:
            # fail at start (before loading), not on every request
            listed = ", ".join(found)
            raise PredictError(f"PUBMEDQA_METHOD={self.default_method!r} is not a trained method here ({listed})")
        self.predictor = Predictor(
            root / "models",
            include_base=self.default_method == BASE,
            eval_file=root / "metrics" / "eval.json",
            base_model=str(base) if (base / "config.json").is_file() else None,
        )

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Answer one request.

        Args:
            data: ``{"inputs": item or [items], "parameters": {"method", "tau"}}`` (see the module docstring).

        Returns:
            One answer per item, in order.

        Raises:
            BadItemError: For a malformed body or item.
            PredictError: For an unknown method or parameter, or a scoring failure.
        """
        if not isinstance(data, dict) or "inputs" not in data:
            raise BadItemError('the request body must be an object with "inputs"')
        inputs = data["inputs"]
        items = [inputs] if isinstance(inputs, dict) else inputs
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise PredictError(f'"parameters" must be an object, got {type(parameters).__name__}')
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            raise PredictError(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(PARAMETERS)}")
        method = parameters.get("method", self.default_method)
        if method is not None and not isinstance(method, str):
            raise PredictError(f'"method" must be a string, got {type(method).__name__}')
        tau = check_tau(parameters.get("tau"), "tau")
        return self.predictor.predict(items, method, tau=tau)
