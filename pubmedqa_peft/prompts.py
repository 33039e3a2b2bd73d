"""What the model reads and what it must answer: the prompt template and the verbalizer.

The template is one small function; the verbalizer maps a label to its answer word.
Only the context is ever truncated to fit ``model.max_source_length``; the question
and the instruction are kept whole.

Instruction-tuned models read the prompt through their tokenizer's chat template
(``model.chat_template: auto`` and a tokenizer that has one, e.g. Qwen2.5-Instruct):
the prompt becomes the user's turn and the answer is the start of the assistant's
(:func:`as_chat`); few-shot exemplars become earlier user/assistant turns. Base models,
and every tokenizer without a template (T5, GPT-2, BioGPT), read the plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from tqdm.auto import tqdm

from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import BINARY, LABEL_ORDER, Task

TEMPLATE_VERSION = "1"
"""Version of :func:`format_prompt`, recorded with every trained model; bump it when the template changes."""

LABELS = BINARY.labels
"""The binary task's class order, ``("no", "yes")``: index 1 is the positive class ``yes``.
Other label sets come from :mod:`pubmedqa_peft.task` (``task.labels``)."""


CHAT_TEMPLATE_SETTINGS = ("auto", "none")
"""``model.chat_template``: ``auto`` wraps prompts in the tokenizer's template when it has one."""


class PromptTooLongError(PipelineError, ValueError):
    """A record cannot fit ``model.max_source_length`` even with its context cut to nothing."""


class FittedPrompt(NamedTuple):
    """A prompt that fits the token budget, with the token ids fitting it already computed."""

    text: str
    input_ids: list[int]
    """``tokenizer(text).input_ids`` (special tokens included), so nobody tokenizes it again."""


def format_prompt(question: str, context: str, task: Task = BINARY) -> str:
    """The prompt template: question first, then the context, then the instruction.

    Args:
        question: The research question.
        context: The abstract's context passages, joined.
        task: The label set, named in the instruction ("yes or no", "yes, no or maybe").

    Returns:
        The prompt text.
    """
    return f"Question: {question}\nContext: {context}\nAnswer the question with {task.answers_phrase}."


def uses_chat(tokenizer: Any, setting: str) -> bool:
    """Whether prompts go through the tokenizer's chat template.

    Args:
        tokenizer: The model's tokenizer.
        setting: ``model.chat_template`` (``auto`` or ``none``).

    Returns:
        True for ``auto`` when the tokenizer defines a chat template.
    """
    if setting not in CHAT_TEMPLATE_SETTINGS:
        raise ValueError(f"unknown chat_template setting {setting!r}; expected one of {CHAT_TEMPLATE_SETTINGS}")
    return setting == "auto" and bool(getattr(tokenizer, "chat_template", None))


def as_chat(tokenizer: Any, turns: Sequence[str]) -> str:
    """Render alternating user/assistant turns through the tokenizer's chat template.

    The last turn is the user's; the text ends with the template's generation prompt
    (the assistant's header), so the answer word follows it directly.

    Args:
        tokenizer: A tokenizer with a ``chat_template``.
        turns: User, assistant, user, ... texts (odd count).

    Returns:
        The rendered text, to be encoded like any prompt (``tokenizer(text)``).
    """
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Templates such as Llama-3's write the BOS token into the text, and encoding the text
    # adds it again: drop the written one when the tokenizer adds its own, so there is one.
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("", verbose=False).input_ids[:1] == [tokenizer.bos_token_id]:
        text = text[len(bos) :]
    return text


def verbalize(label: str) -> str:
    """The verbalizer: the answer word the model must produce for a label.

    Args:
        label: ``"yes"``, ``"no"`` or ``"maybe"``.

    Returns:
        The target word.

    Raises:
        ValueError: For any other label.
    """
    if label not in LABEL_ORDER:
        raise ValueError(f"unknown label {label!r}; expected one of {LABEL_ORDER}")
    return label


def format_fewshot_prompt(
    exemplars: Sequence[dict[str, Any]],
    question: str,
    context: str,
    tokenizer: Any = None,
    chat: bool = False,
    task: Task = BINARY,
) -> str:
    """An in-context prompt: solved exemplars, then the query in the usual template.

    Args:
        exemplars: Records with ``question``, ``context`` and ``label`` (contexts
            already shortened by the caller).
        question: The query question.
        context: The query context.
        tokenizer: The model's tokenizer (needed with ``chat``).
        chat: Render each exemplar as a user turn answered by an assistant turn, and the
            query as the last user turn, through the tokenizer's chat template.
        task: The label set named in the instruction.

    Returns:
        The few-shot prompt text.
    """
    if chat:
        turns = [
            t for e in exemplars for t in (format_prompt(e["question"], e["context"], task), verbalize(e["label"]))
        ]
        return as_chat(tokenizer, [*turns, format_prompt(question, context, task)])
    shots = [f"{format_prompt(e['question'], e['context'], task)} {verbalize(e['label'])}" for e in exemplars]
    return "\n\n".join([*shots, format_prompt(question, context, task)])


def _fit(tokenizer: Any, build: Any, context: str, max_length: int, what: str) -> FittedPrompt:
    """Shorten ``context`` token-wise until ``build(context)`` encodes to ``max_length`` tokens.

    Every call to the tokenizer passes ``verbose=False``: encoding a text longer than the
    model's maximum is the point here (it is measured, then cut), so transformers' warning
    that it "will result in indexing errors" would be noise.
    """
    text = build(context)
    ids = tokenizer(text, verbose=False).input_ids
    if len(ids) <= max_length:
        return FittedPrompt(text, ids)
    overhead = len(tokenizer(build(""), verbose=False).input_ids)
    budget = max_length - overhead
    if budget <= 0:
        raise ValueError(
            f"{what}: the prompt without its context is already {overhead} tokens, "
            f"more than the {max_length} of model.max_source_length it may use"
        )
    ctx_ids = tokenizer(context, add_special_tokens=False, verbose=False).input_ids
    # Decoding then re-encoding can merge or split tokens at the cut, so re-check
    # and trim a little more until it fits.
    while budget > 0:
        text = build(tokenizer.decode(ctx_ids[:budget], skip_special_tokens=True))
        ids = tokenizer(text, verbose=False).input_ids
        if len(ids) <= max_length:
            return FittedPrompt(text, ids)
        budget -= max(1, len(ids) - max_length)
    text = build("")
    return FittedPrompt(text, tokenizer(text, verbose=False).input_ids)


def fit_prompt(
    tokenizer: Any,
    question: str,
    context: str,
    max_length: int,
    record_id: str = "?",
    chat: bool = False,
    task: Task = BINARY,
) -> str:
    """The prompt for one record, its context truncated so it fits ``max_length`` tokens.

    Args:
        tokenizer: A Hugging Face tokenizer.
        question: The question, never truncated.
        context: The context, truncated at the end if needed.
        max_length: Token budget including special tokens.
        record_id: Used in the error message.
        chat: Wrap the prompt in the tokenizer's chat template (:func:`as_chat`).
        task: The label set named in the instruction.

    Returns:
        Prompt text that encodes to at most ``max_length`` tokens.

    Raises:
        ValueError: If the question and instruction alone exceed the budget.
    """
    return fit_prompt_encoded(tokenizer, question, context, max_length, record_id, chat, task).text


def fit_prompt_encoded(
    tokenizer: Any,
    question: str,
    context: str,
    max_length: int,
    record_id: str = "?",
    chat: bool = False,
    task: Task = BINARY,
) -> FittedPrompt:
    """:func:`fit_prompt`, also returning the token ids computed while fitting.

    Args and Raises are those of :func:`fit_prompt`.

    Returns:
        The prompt text and its ``tokenizer(text).input_ids`` (at most ``max_length``).
    """

    def build(c: str) -> str:
        text = format_prompt(question, c, task)
        return as_chat(tokenizer, [text]) if chat else text

    return _fit(tokenizer, build, context, max_length, f"record {record_id}")


def fit_prompts(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    max_length: int,
    source: object,
    chat: bool = False,
    task: Task = BINARY,
) -> list[str]:
    """:func:`fit_prompt` for every record, turning a prompt that cannot fit into a clear error.

    Args:
        tokenizer: A Hugging Face tokenizer.
        rows: Records with ``id``, ``question`` and ``context``.
        max_length: Token budget including special tokens (``model.max_source_length``).
        source: The file the records came from, named in the error.
        chat: Wrap each prompt in the tokenizer's chat template (:func:`as_chat`).
        task: The label set named in the instruction.

    Returns:
        One prompt per record, in order.

    Raises:
        PromptTooLongError: If a record's question and instruction alone exceed the budget.
    """
    return [p.text for p in fit_prompts_encoded(tokenizer, rows, max_length, source, chat, task)]


def fit_prompts_encoded(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    max_length: int,
    source: object,
    chat: bool = False,
    task: Task = BINARY,
) -> list[FittedPrompt]:
    """:func:`fit_prompts`, also returning each prompt's token ids, so they are tokenized only once.

    Args and Raises are those of :func:`fit_prompts`.

    Returns:
        One :class:`FittedPrompt` per record, in order.
    """
    # A bar only if it takes more than a few seconds (large splits): small ones stay quiet.
    bar = tqdm(rows, desc=f"fitting prompts ({source})", unit="prompt", delay=3, leave=False)
    try:
        return [
            fit_prompt_encoded(tokenizer, r["question"], r["context"], max_length, r["id"], chat, task) for r in bar
        ]
    except ValueError as err:
        raise PromptTooLongError(f"{source}: {err}; raise model.max_source_length") from None
