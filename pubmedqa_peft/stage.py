"""How a stage runs: logging set-up and turning expected failures into clear exits.

Every ``stages/<name>.py`` calls :func:`run` with its body. Expected failures (bad
params, bad input data, an unreachable source or model) print one clear message
and exit with status 1 instead of a traceback.
"""

from __future__ import annotations

import logging
import os
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


def under_launcher() -> bool:
    """Whether this process is a worker that a launcher started (it must train, not launch again).

    torch's launcher and ``accelerate launch`` both set ``WORLD_SIZE`` and ``LOCAL_RANK``.
    """
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def run(name: str, body: Callable[[Params], None], *, note_stale: bool = True) -> None:
    """Run one stage: load ``params.yaml``, call ``body``, exit 1 on an expected failure.

    The failure is one line on stderr: ``error: stage <name>: <what is wrong and what to
    do>``, followed by the later stages' outputs the failure leaves stale (see
    :func:`stale_note`).

    Args:
        name: The stage name, for the log.
        body: The stage's work, given the validated params.
        note_stale: Whether a failure names the later outputs it leaves stale (False for
            a stage whose failure deletes nothing that later stages were built from).
    """
    setup_logging()
    try:
        params = load_params()
        # With train.processes > 1 the launching process logs the stage's start and end;
        # its workers run this same stage and would repeat both lines once each.
        worker = under_launcher()
        if not worker:
            log.info("stage %s: start", name)
        body(params)
        if not worker:
            log.info("stage %s: done", name)
    except (ConfigError, PipelineError) as err:
        note = stale_note(name) if note_stale else ""
        print(f"error: stage {name}: {one_line(str(err)).rstrip('.')}{note}", file=sys.stderr)
        sys.exit(1)


def one_line(message: str) -> str:
    """A message on one line: its lines joined with single spaces (what a log scanner expects)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def stale_note(name: str) -> str:
    """Which outputs of later stages a failure of stage ``name`` leaves stale, and how to rebuild them.

    DVC removed the failed stage's outputs before running it, and every stage after it was
    built from those outputs as they were: until the stage succeeds again, those later
    outputs do not match ``params.yaml`` and the code. The stages and their outputs come
    from DVC's own pipeline graph; outside a DVC project (or if DVC cannot read it) the
    note is empty.

    Args:
        name: The failed stage.

    Returns:
        ``"; later outputs stale until this stage succeeds: <outputs> (fix the problem, then
        run `dvc repro`)"``,
        or ``""`` when nothing is downstream.
    """
    try:
        import networkx as nx
        from dvc.repo import Repo

        with Repo() as repo:
            graph = repo.index.graph  # edges point from a stage to the stages it depends on
            stage = next((s for s in graph.nodes if s.addressing == name), None)
            if stage is None:
                return ""
            later = sorted(nx.ancestors(graph, stage), key=lambda s: s.addressing)
            outs = [str(out) for s in later for out in s.outs]
    except Exception:  # the note is a courtesy: never let it hide the error itself
        return ""
    if not outs:
        return ""
    return f"; later outputs stale until this stage succeeds: {', '.join(outs)} (fix the problem, then run `dvc repro`)"
