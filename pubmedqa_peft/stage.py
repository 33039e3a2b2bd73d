"""How a stage runs: logging set-up and turning expected failures into clear exits.

Every ``stages/<name>.py`` calls :func:`run` with its body. Expected failures (bad
params, bad input data, an unreachable source or model) print one clear message
and exit with status 1 instead of a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from pubmedqa_peft.config import ConfigError, Params, load_params

log = logging.getLogger("pubmedqa_peft")


class PipelineError(Exception):
    """An expected failure whose message tells the user what is wrong and what to do."""


def setup_logging(level: int = logging.INFO) -> None:
    """Log one line per step to stderr: time, stage logger and message."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def run(name: str, body: Callable[[Params], None]) -> None:
    """Run one stage: load ``params.yaml``, call ``body``, exit 1 on an expected failure.

    Args:
        name: The stage name, for the log.
        body: The stage's work, given the validated params.
    """
    setup_logging()
    try:
        params = load_params()
        log.info("stage %s: start", name)
        body(params)
        log.info("stage %s: done", name)
    except (ConfigError, PipelineError) as err:
        print(f"error: stage {name}: {err}", file=sys.stderr)
        sys.exit(1)
