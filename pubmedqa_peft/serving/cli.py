"""``python -m pubmedqa_peft.predict``: answer questions with a trained method from the command line.

Three modes::

    # one answer, printed as one JSON line
    python -m pubmedqa_peft.predict --method lora --question "Does X reduce Y?" --context "..."
    # a file: one JSON item per line in, one JSON answer per line out (progress bar on stderr)
    python -m pubmedqa_peft.predict --method lora --input items.jsonl --output answers.jsonl
    # interactive: a question line, then a context line, until an empty question or end of input
    python -m pubmedqa_peft.predict --method lora

Input items and answers have the shapes of :meth:`Predictor.predict
<pubmedqa_peft.serving.predictor.Predictor.predict>`. The model comes from
``--models-dir/<method>/run.json`` alone (no ``params.yaml`` needed); the abstention
threshold from ``--eval-file`` (``metrics/eval.json``) unless ``--tau`` is given.

Exit status: 0 on success, 1 on an expected failure (one line ``error: predict: ...`` on
stderr, no traceback), 2 on bad arguments, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, get_args

from pubmedqa_peft.config import Precision
from pubmedqa_peft.stage import PipelineError, one_line, setup_logging

PROG = "python -m pubmedqa_peft.predict"
log = logging.getLogger("pubmedqa_peft.predict")


class InputError(PipelineError):
    """A bad input line; the message names the file and line."""


def _tau(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    """``--precision``, shared by predict, serve and the demo (as ``evaluate.precision``)."""
    p.add_argument(
        "--precision",
        choices=get_args(Precision),
        default="auto",
        help="scoring precision, as evaluate.precision: auto is bf16 on a GPU with native bf16, "
        "fp16 on older GPUs, fp32 on CPU",
    )


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pubmedqa_peft.predict``."""
    from pubmedqa_peft.modeling import DEVICES

    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Answer research questions (yes/no, or yes/no/maybe) with a trained method. One answer "
            "(--question and --context), a JSONL file (--input and --output), or, with neither, "
            "interactively from the terminal or piped stdin (a question line, then a context line; "
            "an empty question line ends)."
        ),
    )
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="trained models (default: models)")
    p.add_argument(
        "--method",
        help="trained method to use (a directory of --models-dir, or 'base'); needed when --models-dir holds several",
    )
    p.add_argument("--question", help="one question (with --context)")
    p.add_argument("--context", help="its context (the abstract's text)")
    p.add_argument("--input", type=Path, help='JSONL file of items {"question": ..., "context": ...} (with --output)')
    p.add_argument("--output", type=Path, help="JSONL file of answers, one per input line (written atomically)")
    p.add_argument("--tau", type=_tau, help="abstain below this confidence (default: the tau evaluate chose on val)")
    p.add_argument(
        "--eval-file",
        type=Path,
        default=Path("metrics/eval.json"),
        help="where evaluate's tau per method is read (default: metrics/eval.json; absent = no tau)",
    )
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto (default), cpu, cuda or mps")
    p.add_argument("--batch-size", type=_positive, default=8, help="prompts per scoring batch (default 8)")
    add_precision_argument(p)
    return p


def read_items(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The items of a JSONL file, checked, with the line number of each (blank lines skipped).

    Raises:
        InputError: Naming the file and line of the first bad line.
    """
    from pubmedqa_peft.serving.predictor import BadItemError, validate_items

    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    items, lines = [], []
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as err:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({err})") from None
                try:
                    (row,) = validate_items([item])
                except BadItemError as err:
                    raise InputError(f"{path}:{lineno}: {str(err).removeprefix('item 0: ')}") from None
                items.append(row)
                lines.append(lineno)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not items:
        raise InputError(f"{path}: no items (expected one JSON object per line)")
    return items, lines


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def predict_file(
    predictor: Any, method: str, source: Path, target: Path, read: tuple[list[dict[str, Any]], list[int]] | None = None
) -> int:
    """Answer every line of ``source`` into ``target`` (replaced atomically); returns the count.

    ``read``: what :func:`read_items` returned for ``source``, if already read.
    """
    import torch
    from tqdm.auto import tqdm

    from pubmedqa_peft import files
    from pubmedqa_peft.serving.predictor import BadItemError

    items, lines = read or read_items(source)
    answers: list[dict[str, Any]] = []
    # Chunks of several batches per CPU thread, so the scorer's parallel batches stay busy
    # while the bar still moves.
    size = predictor.batch_size * max(1, torch.get_num_threads()) * 2
    with tqdm(total=len(items), desc=f"predicting {source.name}", unit="item", file=sys.stderr) as bar:
        for part in _chunks(len(items), size):
            try:
                answers.extend(predictor.predict(items[part], method))
            except BadItemError as err:  # e.g. a question too long for the model's budget
                index, _, rest = str(err).removeprefix("item ").partition(": ")
                raise InputError(f"{source}:{lines[part.start + int(index)]}: {rest}") from None
            bar.update(part.stop - part.start)
    files.write_jsonl(target, answers)
    return len(answers)


def _read_line(stream: TextIO, prompt: str, tty: bool) -> str | None:
    if tty:
        print(prompt, end="", file=sys.stderr, flush=True)
    line = stream.readline()
    return None if line == "" else line.rstrip("\n")


def interactive(predictor: Any, method: str, stream: TextIO, tty: bool) -> int:
    """Read question and context lines from ``stream`` and print an answer for each pair.

    On a terminal the answers are read by a person: a short line each, and a bad item is
    reported and asked again. From a pipe each answer is one JSON line, and a bad item
    stops with its line number.

    Returns:
        The number of questions answered.
    """
    from pubmedqa_peft.serving.predictor import BadItemError

    if tty:
        print("Question, then context; an empty question (or Ctrl-D) ends.", file=sys.stderr)
    lineno, answered = 0, 0
    while True:
        question = _read_line(stream, "question> ", tty)
        lineno += 1
        if question is None or not question.strip():
            return answered
        context = _read_line(stream, "context> ", tty)
        lineno += 1
        if context is None:
            raise InputError(f"stdin:{lineno - 1}: a question without a context line after it")
        try:
            (answer,) = predictor.predict([{"question": question, "context": context}], method)
        except BadItemError as err:
            message = str(err).removeprefix("item 0: ")
            if not tty:
                field_line = lineno - 1 if "'question'" in message else lineno
                raise InputError(f"stdin:{field_line}: {message}") from None
            print(f"error: {message}", file=sys.stderr)
            continue
        answered += 1
        print(_for_person(answer) if tty else json.dumps(answer), flush=True)


def _for_person(answer: dict[str, Any]) -> str:
    probs = "  ".join(f"P({label})={p:.3f}" for label, p in answer["probabilities"].items())
    verdict = f"abstains (best guess: {answer['label']})" if answer["abstained"] else answer["label"]
    return f"{verdict}  {probs}  [{answer['method']}]"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; see the module docstring."""
    p = parser()
    args = p.parse_args(argv)
    if (args.question is None) != (args.context is None):
        p.error("--question and --context go together")
    if (args.input is None) != (args.output is None):
        p.error("--input and --output go together")
    if args.question is not None and args.input is not None:
        p.error("give either --question/--context or --input/--output, not both")
    setup_logging(logging.WARNING)  # stdout carries the answers; stderr only problems
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bars: noise here
    try:
        _run(args)
    except PipelineError as err:
        print(f"error: predict: {one_line(str(err)).rstrip('.')}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _run(args: argparse.Namespace) -> None:
    from pubmedqa_peft.serving.predictor import Predictor, trained_methods, validate_items

    # The input is checked before seconds are spent on loading the model.
    read = None
    if args.question is not None:
        validate_items([{"question": args.question, "context": args.context}])
    elif args.input is not None:
        read = read_items(args.input)
    method = args.method
    if method is None:  # before loading anything: only one method may be meant
        found = trained_methods(args.models_dir)
        if len(found) > 1:
            raise PipelineError(
                f"{args.models_dir} holds several trained methods ({', '.join(found)}); choose one with --method"
            )
        method = found[0] if found else None
    predictor = Predictor(
        args.models_dir,
        [method] if method else None,
        eval_file=args.eval_file,
        tau=args.tau,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    if args.question is not None:
        (answer,) = predictor.predict([{"question": args.question, "context": args.context}], method)
        print(json.dumps(answer))
    elif args.input is not None:
        n = predict_file(predictor, method, args.input, args.output, read)
        print(f"wrote {n} answers to {args.output}", file=sys.stderr)
    else:
        interactive(predictor, method, sys.stdin, sys.stdin.isatty())
