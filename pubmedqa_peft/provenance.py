"""What produced an output: resolved config, package versions and git revision.

Every metrics file embeds this so that a number can be traced back to its inputs. Metrics
files are committed and shared, so URL-valued params appear redacted
(:func:`~pubmedqa_peft.redaction.redact_url`: no credentials, no query values).
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from typing import Any

from pydantic import BaseModel

from pubmedqa_peft.redaction import redact_url

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "dvc",
    "dvclive",
    "scikit-learn",
    "pandas",
    "numpy",
    "pydantic",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results (``"absent"`` if missing)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_revision() -> str:
    """The current git commit, with ``-dirty`` if the work tree has changes; ``unknown`` outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def _redacted(value: Any) -> Any:
    """``value`` (JSON-ready) with every string passed through :func:`redact_url`."""
    # Every string, not a list of known URL keys: a new URL-valued param is covered at
    # once, and redact_url leaves anything that is not a URL unchanged.
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def provenance(**named: BaseModel) -> dict[str, Any]:
    """Describe how an output was made.

    Args:
        **named: Config sections that the stage read, by their ``params.yaml`` name.

    Returns:
        A JSON-ready dict with ``config`` (URLs in it redacted), ``versions`` and
        ``git_revision``.
    """
    return {
        "config": {k: _redacted(v.model_dump(mode="json")) for k, v in named.items()},
        "versions": package_versions(),
        "git_revision": git_revision(),
    }
