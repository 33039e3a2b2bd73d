"""The demo page: one question asked of the base model and every trained method, side by side.

``python -m pubmedqa_peft.demo`` serves a Gradio page on 127.0.0.1 (issue 14 item 5). It
loads a :class:`~pubmedqa_peft.serving.predictor.Predictor` with the base model and the
methods in ``models/``, and for a question and its context shows each model's P(label)
bars, its answer, and "abstains" where its confidence falls below the tau ``evaluate``
chose on val. A few test-split questions are there to click. It is a research demo and
says so: the models are small and the answers are not medical advice.

The page works offline: Gradio's analytics and version check are off, there is no share
link, and the theme's fonts are served by the app itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pubmedqa_peft import files, paths
from pubmedqa_peft.plotting import method_color, method_label
from pubmedqa_peft.serving.cli import add_precision_argument
from pubmedqa_peft.stage import PipelineError, one_line, setup_logging
from pubmedqa_peft.task import LABEL_ORDER, Task

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("pubmedqa_peft.demo")

PROG = "python -m pubmedqa_peft.demo"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def title(labels: Sequence[str]) -> str:
    """The page's heading, naming the answers the models choose between, in display order (``yes/no/maybe``)."""
    return f"PubMedQA {'/'.join(labels)}: the base model and each fine-tuned method"


DISCLAIMER = (
    "Research demo, not medical advice. These are small models fine-tuned on a few hundred "
    "PubMedQA questions; their answers can be wrong and must not be used for any clinical or "
    "health decision."
)
EXAMPLES_PER_LABEL = 2
"""Test-split questions offered per gold label (the first ones in file order)."""


class DemoError(PipelineError):
    """The demo cannot start (its port is taken, its examples file is unreadable, ...)."""


class PredictorLike(Protocol):
    """What the page needs of a :class:`~pubmedqa_peft.serving.predictor.Predictor`."""

    methods: list[str]
    task: Task

    def describe(self) -> dict[str, dict]:
        """Per method: its run.json manifest and ``tau``."""
        ...

    def validate(self, items: Sequence[Mapping[str, Any]]) -> list[dict]:
        """The item checks alone (raises ``BadItemError``)."""
        ...

    def predict(self, items: Sequence[Mapping[str, Any]], method: str | None = None) -> list[dict]:
        """One prediction dict per item."""
        ...


def load_examples(path: Path | str, per_label: int = EXAMPLES_PER_LABEL) -> list[dict[str, str]]:
    """A few questions of a split file to click: the first ``per_label`` of each label, in label order.

    Args:
        path: A JSON-lines split file (``data/splits/test.jsonl``) of records with
            ``question``, ``context`` and ``label``.
        per_label: How many questions of each label to take.

    Returns:
        Records ``{"question", "context", "label"}``; empty when the file does not exist
        (the pipeline has not split the data here).

    Raises:
        DemoError: If the file exists but a line is not a JSON record with those fields.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        records = files.read_jsonl(path)
    except ValueError as err:
        raise DemoError(str(err)) from None
    chosen: dict[str, list[dict[str, str]]] = {label: [] for label in LABEL_ORDER}
    for number, record in enumerate(records, start=1):
        try:
            question, context, label = record["question"], record["context"], record["label"]
        except KeyError as err:
            raise DemoError(f"{path}: record {number} has no {err.args[0]!r}; expected a split file") from None
        if isinstance(context, list):  # passages, joined as the data stage joins them
            context = " ".join(context)
        if label in chosen and len(chosen[label]) < per_label:
            chosen[label].append({"question": question, "context": context, "label": label})
    return [record for label in LABEL_ORDER for record in chosen[label]]


def format_answer(prediction: Mapping[str, Any], tau: float | None) -> str:
    """The answer line under a model's bars: the label and its confidence, or that it abstains.

    Args:
        prediction: One dict of ``Predictor.predict``.
        tau: The method's threshold (None: it never abstains).

    Returns:
        E.g. ``"yes (confidence 0.81)"`` or ``"abstains: confidence 0.55 is below tau 0.62
        (it would have said no)"``.
    """
    label, confidence = prediction["label"], prediction["confidence"]
    if prediction["abstained"]:
        below = f"below tau {tau:.2f}" if tau is not None else "below its threshold"
        return f"abstains: confidence {confidence:.2f} is {below} (it would have said {label})"
    return f"{label} (confidence {confidence:.2f})"


def label_value(prediction: Mapping[str, Any]) -> dict[str, float]:
    """A ``gr.Label`` value: P(label) for every label the method answers."""
    return {label: float(p) for label, p in prediction["probabilities"].items()}


def tau_note(tau: float | None) -> str:
    """How a model's abstention threshold reads under its name."""
    if tau is None:
        return "tau: none (never abstains)"
    return f"abstains below tau = {tau:.2f}"


def answer_fn(predictor: PredictorLike) -> Callable[[str, str], tuple[Any, ...]]:
    """The page's one event: ask every loaded model one question.

    Args:
        predictor: The loaded models.

    Returns:
        A function ``(question, context) -> outputs``: for each method in
        ``predictor.methods`` its ``gr.Label`` value then its answer line, and last the raw
        predictions (a list of ``Predictor.predict`` dicts, one per method). Bad input and
        prediction failures become a ``gr.Error`` that the page shows, one line.
    """
    import gradio as gr

    taus = {method: info.get("tau") for method, info in predictor.describe().items()}
    # The Predictor takes one call at a time; the page's events (the button, an example's
    # click) run in Gradio's worker threads, so they take turns here.
    lock = threading.Lock()

    def answer(question: str, context: str) -> tuple[Any, ...]:
        items = [{"question": question, "context": context}]
        try:
            predictor.validate(items)
            with lock:
                predictions = [predictor.predict(items, method)[0] for method in predictor.methods]
        except PipelineError as err:  # PredictError and BadItemError: one line for the page
            raise gr.Error(one_line(str(err))) from None
        outputs: list[Any] = []
        for method, prediction in zip(predictor.methods, predictions, strict=True):
            outputs += [label_value(prediction), format_answer(prediction, taus.get(method))]
        return (*outputs, predictions)

    return answer


def build_demo(predictor: PredictorLike, examples: Sequence[Mapping[str, str]] = ()) -> gr.Blocks:
    """The page: question and context in, one column per model out.

    Args:
        predictor: The loaded models (``"base"`` among them to compare with).
        examples: Records with ``question``, ``context`` and ``label`` to offer as clickable
            examples (none: no examples section).

    Returns:
        The Gradio app; its event is also the API endpoint ``/answer``
        (``gradio_client.Client(url).predict(question, context, api_name="/answer")``).
    """
    import gradio as gr

    info = predictor.describe()
    model = next((m.get("base_model") for m in info.values() if m.get("base_model")), None)
    answer = answer_fn(predictor)
    # The page opens on the first example already answered (computed once, here), so a
    # visitor sees at once what it does, and the page needs no model call to render.
    first = examples[0] if examples else {"question": "", "context": ""}
    initial: list[Any] = [None] * (2 * len(predictor.methods) + 1)
    if examples:
        try:
            initial = list(answer(first["question"], first["context"]))
        except gr.Error as err:  # a page without the first answer is still a page
            log.warning("the first example was not answered, the page opens without answers: %s", err.message)
    # The full window's width: six models side by side (base and five methods) must fit on one row.
    with gr.Blocks(title="PubMedQA demo (research only)", analytics_enabled=False, fill_width=True) as demo:
        gr.Markdown(f"# {title(predictor.task.display)}")
        gr.Markdown(f"**{DISCLAIMER}**", elem_id="disclaimer")
        if model:
            gr.Markdown(f"Base model: `{model}`. Methods: {', '.join(method_label(m) for m in predictor.methods)}.")
        question = gr.Textbox(
            value=first["question"], label="Question", lines=2, placeholder="e.g. Does X reduce mortality in Y?"
        )
        context = gr.Textbox(
            value=first["context"],
            label="Context (the abstract)",
            lines=6,
            max_lines=10,
            placeholder="Paste the abstract's text.",
        )
        button = gr.Button("Answer", variant="primary")
        outputs: list[gr.components.Component] = []
        with gr.Row(equal_height=True):
            for i, method in enumerate(predictor.methods):
                with gr.Column(min_width=150):
                    # The method's colour from the figures marks its column (as a swatch: a coloured
                    # gr.Label box would hide the black text of `full` and of the dark grey base).
                    swatch = f'<span style="color: {method_color(method)}">&#9632;</span>'
                    gr.Markdown(f"### {swatch} {method_label(method)}\n{tau_note(info.get(method, {}).get('tau'))}")
                    outputs.append(
                        gr.Label(
                            initial[2 * i],
                            label=f"P(label), {method}",
                            num_top_classes=len(predictor.task.labels),
                            show_heading=False,
                            min_width=150,
                        )
                    )
                    outputs.append(gr.Textbox(initial[2 * i + 1], label=f"answer, {method}", interactive=False))
        with gr.Accordion("Raw predictions (JSON, as Predictor.predict returns them)", open=False):
            raw = gr.JSON(initial[-1], label="predictions")
        if examples:
            gr.Examples(
                examples=[[e["question"], e["context"]] for e in examples],
                inputs=[question, context],
                outputs=[*outputs, raw],
                fn=answer,
                run_on_click=True,
                cache_examples=False,
                example_labels=[f"[gold: {e['label']}] {e['question']}" for e in examples],
                label="Test-split examples (click one to ask it)",
            )
        gr.Markdown(f"_{DISCLAIMER}_")
        gr.on(
            triggers=[button.click, question.submit],
            fn=answer,
            inputs=[question, context],
            outputs=[*outputs, raw],
            api_name="answer",
            # The Predictor answers one call at a time; the page's queue serialises them.
            concurrency_limit=1,
        )
    return demo


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts: nothing for the browser to fetch from elsewhere."""
    import gradio as gr

    return gr.themes.Default(
        font=("ui-sans-serif", "system-ui", "sans-serif"), font_mono=("ui-monospace", "Consolas", "monospace")
    )


def check_port_free(host: str, port: int) -> None:
    """Fail before loading any model if the address cannot be bound.

    Raises:
        DemoError: If ``host:port`` is taken or not an address of this machine.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise DemoError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Serve a local demo page comparing the base model and each trained method on one question "
            f"(Gradio). {DISCLAIMER}"
        ),
    )
    parser.add_argument(
        "--models-dir",
        default=str(paths.MODELS_DIR),
        help="directory of trained methods, one subdirectory with a run.json each (default: %(default)s)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=None, metavar="METHOD", help="methods to load (default: every one found)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s, local only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps (default: auto)")
    add_precision_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m pubmedqa_peft.demo [--models-dir DIR] [--methods M ...] [--port N] ...``.

    Startup failures (no trained models, a taken port, ...) print one line on stderr and
    exit 1; once the page is up, bad input is answered on the page.
    """
    args = _parser().parse_args(argv)
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup checks, one line per request
    # Before gradio is imported: no analytics, no version check against the internet.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        check_port_free(args.host, args.port)
        examples = load_examples(paths.split_file("test"))
        log.info("loading the base model and the methods in %s", args.models_dir)
        from pubmedqa_peft.serving.predictor import Predictor

        predictor = Predictor(
            args.models_dir, args.methods, include_base=True, device=args.device, precision=args.precision
        )
        demo = build_demo(predictor, examples)
        log.info("serving %s at http://%s:%d", ", ".join(predictor.methods), args.host, args.port)
        demo.queue().launch(
            server_name=args.host,
            server_port=args.port,
            share=False,
            inbrowser=False,
            show_error=True,
            quiet=True,
            theme=theme(),
        )
    except PipelineError as err:
        print(f"error: demo: {one_line(str(err)).rstrip('.')}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # gradio could not bind after all (a race with another server)
        print(f"error: demo: {one_line(str(err))}", file=sys.stderr)
        sys.exit(1)
