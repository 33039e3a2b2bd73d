"""How several training processes are started: torch's own launcher, one worker per process.

With ``train.processes`` > 1 the train stage does not train itself: it hands its own
command (``python -m stages.train <method>``) to torch's elastic launcher, the code behind
``torchrun --standalone --nproc_per_node N``, which starts N workers on this machine and
sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in each. A worker sees those and trains
(:func:`under_launcher`): the Trainer (through Accelerate) wraps the model in
DistributedDataParallel, over gloo on CPU and NCCL on CUDA, and each worker takes its own
``train.batch_size`` examples per step, so the global batch is ``batch_size x processes x
gradient_accumulation_steps``. Only rank 0 writes outputs (:mod:`pubmedqa_peft.training`).

The launcher runs in the stage's own process, not as a subprocess, so that a failed
worker arrives as a structured error (which rank, which signal or exit status) and
becomes one clear line, without the launcher's traceback and report.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pubmedqa_peft.stage import PipelineError, under_launcher

log = logging.getLogger(__name__)

RESUME_HINT = "rerun `dvc repro` to resume from the last checkpoint"


def prepare_worker(device: str) -> None:
    """Set up a training process before it loads a model: quiet replicas, one GPU per worker.

    Under a launcher every worker runs the same steps; only rank 0 logs them at INFO
    (the others log warnings and errors), so the log reads as one run. On CUDA each worker
    takes GPU ``LOCAL_RANK`` as its current device, so that the base model loads straight
    onto its own GPU rather than every worker's copy landing on GPU 0 first.

    Args:
        device: ``model.device``.
    """
    if not under_launcher():
        return
    if os.environ.get("RANK", "0") != "0":
        logging.getLogger().setLevel(logging.WARNING)
    sys.excepthook = _after_grace(sys.excepthook)
    log.info("training worker 0 of %s: loading torch (rank 0 logs for all workers)", os.environ["WORLD_SIZE"])
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))


GRACE_S = 3.0
"""How long a worker waits before reporting an unexpected error (see :func:`_after_grace`)."""


def _after_grace(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``sys.excepthook`` that reports an uncaught error only after :data:`GRACE_S` seconds.

    When a worker dies, the collective its peers are in fails at once (gloo sees the closed
    connection) and each peer would print a traceback about a lost connection; the launcher
    stops them (SIGTERM) within its monitor interval, so during the grace they die
    silently, and the one line about the dead worker says what happened. A worker's own
    error is printed as usual, a few seconds late.
    """

    def excepthook(*exc_info: Any) -> None:
        time.sleep(GRACE_S)
        hook(*exc_info)

    return excepthook


def launch_workers(stage: str, worker: Sequence[str], processes: int, device: str) -> None:
    """Run ``python <worker...>`` in ``processes`` workers through torch's launcher and wait.

    Args:
        stage: The stage's name, for the log.
        worker: The worker's arguments after the interpreter (``["-m", "stages.train", "lora"]``).
        processes: How many workers (``train.processes``).
        device: ``model.device``: on CUDA each worker needs a GPU of its own.

    Raises:
        PipelineError: More workers than GPUs (before any starts), a worker was killed by a
            signal, or the launch was interrupted: one line saying which and what to do.
        SystemExit: A worker exited with an error status; it printed its own message.
    """
    log.info("%s: starting %d training workers (torch.distributed.run, DDP)", stage, processes)
    import torch

    gpus = torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0
    if gpus and processes > gpus:
        raise PipelineError(
            f"train.processes is {processes} but this machine has {gpus} GPU(s), one per worker: "
            f"set train.processes to at most {gpus} (or model.device: cpu to train on the CPU)"
        )
    # The launcher would give each worker one thread (and warn); share the cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun's own entry point (its `main` without the handler that prints a traceback).
    args = parse_args(["--standalone", f"--nproc-per-node={processes}", "--no-python", sys.executable, *worker])
    # The launcher logs its own progress and, on a failure, a report per worker: the
    # outcome is said in one line below instead (workers log as usual: other processes).
    logging.disable(logging.ERROR)
    try:
        run(args)
    except ChildFailedError as err:
        raise _worker_failure(err.failures, processes) from None
    except SignalException as err:
        sys.stderr.write("\n")  # after a dead worker's half-drawn progress bar
        raise PipelineError(
            f"training interrupted ({signal.Signals(err.sigval).name}); its workers were stopped and "
            f"nothing was written; {RESUME_HINT}"
        ) from None
    finally:
        logging.disable(logging.NOTSET)


def _worker_failure(failures: dict, processes: int) -> BaseException:
    """The error to raise for the launcher's failed workers (global rank -> ProcessFailure).

    A worker killed by a signal printed nothing, and is the cause: the others fail after
    it, stopped by the launcher with SIGTERM (so a SIGTERM is the cause only when nothing
    else is). A worker that exited with an error status printed its own message, so the
    stage just exits with that status.
    """
    by_time = sorted(failures.items(), key=lambda item: (item[1].timestamp, item[0]))
    killed = [(r, f) for r, f in by_time if f.exitcode < 0 and f.exitcode != -signal.SIGTERM]
    exited = [f for _, f in by_time if f.exitcode > 0]
    if not killed and exited:
        return SystemExit(exited[0].exitcode)
    sys.stderr.write("\n")  # the error's own line, after a dead worker's half-drawn progress bar
    r, failure = (killed or by_time)[0]
    return PipelineError(
        f"training worker {r} of {processes} died (signal {failure.signal_name()}); nothing was written; {RESUME_HINT}"
    )
