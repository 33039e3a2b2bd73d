"""Serve trained models over HTTP: ``python -m pubmedqa_peft.serve --method lora --port 8000``.

Loads the methods' adapters from ``models/`` (each directory's ``run.json`` says how;
no ``params.yaml`` needed) and the tau ``evaluate`` chose from ``metrics/eval.json``,
then answers ``POST /v1/predict``, ``GET /v1/models`` and ``GET /health`` (see
:mod:`pubmedqa_peft.serving.http` for the JSON schema and the micro-batching).

Set ``PUBMEDQA_API_KEY`` to require ``Authorization: Bearer <key>`` on ``/v1/*``. The
server binds to 127.0.0.1 unless ``--host`` says otherwise; ``--port 0`` picks a free
port (the "listening on" log line names it). SIGTERM or Ctrl-C stops accepting
connections, answers every request already received, then exits with status 0.
A startup failure (no models, a bad option, the port taken) is one line on stderr and
exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pubmedqa_peft.config import ConfigError
from pubmedqa_peft.serving.cli import add_precision_argument
from pubmedqa_peft.stage import PipelineError, one_line, setup_logging

log = logging.getLogger("pubmedqa_peft.serve")

LISTENING = re.compile(r"listening on http://(\S+?):(\d+) ")
"""The log line that says the server is ready, with its host and port."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pubmedqa_peft.serve",
        description="Serve trained models over HTTP (POST /v1/predict, GET /v1/models, GET /health).",
        epilog="Set PUBMEDQA_API_KEY to require 'Authorization: Bearer <key>' on /v1/*.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--method",
        action="append",
        metavar="NAME",
        help="a method to load from MODELS_DIR/NAME (repeat for several); default: every directory with a run.json",
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="where the trained methods are")
    parser.add_argument("--include-base", action="store_true", help="also serve the untuned base model as 'base'")
    parser.add_argument(
        "--eval-file",
        default="metrics/eval.json",
        help="evaluate's metrics, for each method's tau ('' for none: never abstain)",
    )
    parser.add_argument("--tau", type=float, help="abstain below this confidence for every method (overrides)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass inside a batch")
    add_precision_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="items scored together at most; best a multiple of --batch-size x CPU cores (all cores busy)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="how long the first waiting item waits for its batch to fill (0: score what is queued at once)",
    )
    parser.add_argument("--max-items", type=int, default=64, help="items per request at most")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body size limit")
    parser.add_argument("--max-queue", type=int, default=1024, help="items waiting at most; beyond it: 503")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=60.0,
        help="seconds a shutdown waits for requests in flight before cancelling them",
    )
    parser.add_argument("--access-log", action="store_true", help="also log one line per HTTP request")
    return parser


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6).

    Raises:
        PipelineError: If the address cannot be bound (port taken, unknown host).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        raise PipelineError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def start_process(
    args: Sequence[str],
    log_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m pubmedqa_peft.serve ARGS`` in the background and wait until it listens.

    For scripts and tests that drive a real server process: pass ``--port 0`` and read the
    port from the result.

    Args:
        args: Its command-line arguments.
        log_file: Where its stdout and stderr go (the log).
        env: Its environment (default: this process's).
        cwd: Its working directory.
        timeout: Seconds to wait for the "listening on" log line.

    Returns:
        The process and the port it listens on.

    Raises:
        PipelineError: If it exits or stays silent for ``timeout`` s (it is killed), with its log.
    """
    cmd = [sys.executable, "-m", "pubmedqa_peft.serve", *args]
    with Path(log_file).open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env or os.environ), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not (match := LISTENING.search(Path(log_file).read_text(errors="replace"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise PipelineError(f"the server did not start: {Path(log_file).read_text(errors='replace')}")
        time.sleep(0.1)
    return proc, int(match[2])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server until SIGTERM or Ctrl-C.

    Args:
        argv: Command-line arguments; None reads ``sys.argv``.
    """
    args = _parser().parse_args(argv)
    setup_logging()
    try:
        import uvicorn

        from pubmedqa_peft.serving.http import API_KEY_ENV, Limits, create_app

        limits = Limits(args.max_batch, args.max_wait_ms, args.max_items, args.max_body_bytes, args.max_queue)
        limits.check()
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if not args.models_dir.is_dir():
            raise PipelineError(f"models directory {args.models_dir} not found; train with `dvc repro` or --models-dir")
        log.info("loading %s from %s", ", ".join(args.method) if args.method else "every method", args.models_dir)
        # Imported after the first log line: torch and transformers take seconds to import.
        from pubmedqa_peft.serving.predictor import Predictor

        predictor = Predictor(
            args.models_dir,
            args.method,
            include_base=args.include_base,
            eval_file=args.eval_file or None,
            tau=args.tau,
            device=args.device,
            batch_size=args.batch_size,
            precision=args.precision,
        )
        sock = bind(args.host, args.port)
    except (PipelineError, ConfigError, ValueError) as err:
        print(f"error: serve: {one_line(str(err)).rstrip('.')}", file=sys.stderr)
        sys.exit(1)

    api_key = os.environ.get(API_KEY_ENV) or None
    app = create_app(predictor, limits, api_key=api_key)
    config = uvicorn.Config(
        app,
        log_config=None,  # keep our logging set-up; uvicorn's loggers propagate to it
        access_log=args.access_log,
        timeout_graceful_shutdown=args.graceful_timeout,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    log.info(
        "listening on http://%s:%d (methods %s; max batch %d, max wait %g ms; auth %s)",
        url_host,
        port,
        ", ".join(predictor.methods),
        limits.max_batch,
        limits.max_wait_ms,
        f"on ({API_KEY_ENV} set)" if api_key else "off",
    )

    # uvicorn handles SIGTERM/SIGINT while it runs and re-raises the signal once it has shut
    # down; this handler takes that re-raise (and a signal arriving just before uvicorn
    # installs its own), so a requested shutdown ends with status 0, not death by signal.
    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    main()
