"""The library warnings known to be harmless here, silenced where our code triggers them, and why.

Each is silenced only around the call that triggers it, never globally, so the same
warning from anywhere else still shows:

* transformers 5's "tied weights ... we will NOT tie them" on loading a T5 v1.1
  checkpoint (:func:`untied_head_load`): transformers turns flan-t5's
  ``tie_word_embeddings: false`` into ``true`` when it reads the config, then finds the
  checkpoint's separate ``lm_head.weight`` and warns once per load that it keeps it
  untied, which is right; :func:`pubmedqa_peft.modeling.load_base_model` logs the untied
  head itself.
* transformers' FutureWarning that ``is_gradient_checkpointing`` /
  ``gradient_checkpointing_enable`` are deprecated (:func:`library_deprecations`): the
  Trainer and PEFT call these aliases themselves; nothing on our side can change it.
* the Trainer's "mtime may not be reliable on this filesystem, falling back to
  numerical ordering" (:func:`trainer_run`) when it rotates checkpoints: numerical
  ordering is what we want (checkpoints are numbered by step).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

UNTIED_HEAD = "The tied weights mapping and config for this model specifies to tie"
CHECKPOINT_MTIME = "mtime may not be reliable on this filesystem"
DEPRECATED_ALIASES = ("`is_gradient_checkpointing` is deprecated", "`gradient_checkpointing_enable` is deprecated")


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


@contextlib.contextmanager
def _dropped(logger_name: str, *prefixes: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    dropped = _DropMessages(prefixes)
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


@contextlib.contextmanager
def untied_head_load() -> Iterator[None]:
    """Loading a checkpoint, without transformers' warning about its untied output head."""
    with _dropped("transformers.modeling_utils", UNTIED_HEAD):
        yield


@contextlib.contextmanager
def trainer_run() -> Iterator[None]:
    """Building and running the Trainer, without its deprecation and checkpoint-ordering notices."""
    with library_deprecations(), _dropped("transformers.trainer_utils", CHECKPOINT_MTIME):
        yield


@contextlib.contextmanager
def library_deprecations() -> Iterator[None]:
    """A block in which transformers' and PEFT's calls of deprecated aliases stay quiet."""
    with warnings.catch_warnings():
        for message in DEPRECATED_ALIASES:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        yield
