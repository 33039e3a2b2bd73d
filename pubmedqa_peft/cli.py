"""The ``pubmedqa-peft`` command: one entry point that hands each subcommand to its module.

Installed as a console script by ``pip install -r requirements.txt`` (which installs this
package, see ``pyproject.toml``)::

    pubmedqa-peft best [--metric KEY] [--json] ...      # = python -m pubmedqa_peft.experiments best ...
    pubmedqa-peft tune --method M [--trials N] ...       # = python -m pubmedqa_peft.tune ...
    pubmedqa-peft random-model ARCH OUTDIR [...]         # = python -m pubmedqa_peft.random_model ...
    pubmedqa-peft COMMAND --help                         # that command's own options

This is only a dispatcher: each command keeps its arguments, help and exit codes in its
own module's ``main``, so ``pubmedqa-peft X`` and ``python -m`` of that module behave the
same. A new command is one entry of :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from dataclasses import dataclass

from pubmedqa_peft import __version__

PROG = "pubmedqa-peft"


@dataclass(frozen=True)
class Command:
    """A subcommand: which module's ``main(argv)`` runs it.

    Attributes:
        module: Dotted module name; its ``main(argv)`` parses the arguments.
        help: One line for ``pubmedqa-peft --help``.
        argv_prefix: Arguments put before the user's, for a module whose own parser
            has subcommands (``experiments`` takes ``best``).
    """

    module: str
    help: str
    argv_prefix: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {
    "best": Command(
        "pubmedqa_peft.experiments",
        "print the best finished DVC experiment by a validation metric",
        argv_prefix=("best",),
    ),
    "tune": Command(
        "pubmedqa_peft.tune",
        "search a method's hyperparameters with Optuna, one DVC experiment per trial (resumable, multi-worker)",
    ),
    "random-model": Command(
        "pubmedqa_peft.random_model",
        "write a random-weight model (T5 or decoder-only) with an offline tokenizer (smoke tests without the hub)",
    ),
    "predict": Command(
        "pubmedqa_peft.predict", "answer questions with a trained method (one, a JSONL file, or interactive)"
    ),
    "serve": Command("pubmedqa_peft.serve", "serve trained methods over HTTP (micro-batched; 127.0.0.1 by default)"),
    "demo": Command("pubmedqa_peft.demo", "a demo page: the base model and each trained method side by side"),
    "sanity-data": Command(
        "pubmedqa_peft.sanity",
        "write a PQA-L-shaped file whose answers are planted in the context (does training learn?)",
    ),
}
"""Every subcommand, in the order ``--help`` lists them."""


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<14}{cmd.help}" for name, cmd in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fine-tune and compare PEFT methods on PubMedQA (the pipeline itself runs with `dvc repro`).",
        epilog=f"commands:\n{listing}\n\n`{PROG} COMMAND --help` lists a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    # REMAINDER after a positional passes everything on untouched, `--help` included, so the
    # command's own parser answers it (REMAINDER as the *first* positional would not: bpo-17050).
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``pubmedqa-peft COMMAND [ARGS...]``.

    Args:
        argv: The arguments after the program name; None reads ``sys.argv``.
    """
    args = _parser().parse_args(argv)
    command = COMMANDS[args.command]
    # Imported only when chosen: `--help` and `best` must not pay for loading torch.
    module = importlib.import_module(command.module)
    module.main([*command.argv_prefix, *args.args])
