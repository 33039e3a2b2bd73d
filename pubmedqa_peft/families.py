"""Which model families the pipeline runs, told apart by the model's config, never its name.

Two families, one small interface each (:class:`Family`):

* ``seq2seq`` (encoder-decoder, ``config.is_encoder_decoder``): T5 and flan-t5. The
  prompt is the encoder input and the answer the decoder target (``yes</s>``).
* ``causal`` (decoder-only): Llama, Qwen2, Mistral, GPT-2, BioGPT. The prompt is
  followed by the answer in one sequence; the answer is the continuation after the
  prompt, encoded together with it and split at the prompt's length as
  lm-evaluation-harness does (so the leading space of `` yes`` belongs to the answer),
  then end-of-sequence; the loss covers the answer and EOS only.

Supported ``model_type`` values are listed in :data:`SUPPORTED`; any other architecture
stops with one line naming it and the supported ones. A tokenizer without a pad token
(GPT-2, Llama, Mistral) pads with its end-of-sequence token: padding positions are
masked out of attention and loss, so which id fills them does not change any number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pubmedqa_peft.stage import PipelineError

SUPPORTED: dict[str, str] = {
    "t5": "seq2seq",
    "llama": "causal",
    "qwen2": "causal",
    "mistral": "causal",
    "gpt2": "causal",
    "biogpt": "causal",
}
"""``config.model_type`` -> family, for every architecture tested here."""

ANSWER_DELIMITER = " "
"""Put between a causal model's prompt and its answer (lm-evaluation-harness's ``target_delimiter``)."""


def answer_delimiter(chat: bool) -> str:
    """What separates a causal model's prompt from its answer.

    A space after a plain prompt; nothing after a chat template's generation prompt,
    which already ends the assistant's header (lm-evaluation-harness does the same when
    it applies a chat template).
    """
    return "" if chat else ANSWER_DELIMITER


# PEFT ships no default LoRA / IA3 targets for BioGPT (peft 0.21): its attention projections
# are q_proj/k_proj/v_proj/out_proj and its feed-forward fc1/fc2, as in BART.
EXTRA_LORA_TARGETS: dict[str, list[str]] = {"biogpt": ["q_proj", "v_proj"]}
EXTRA_IA3_TARGETS: dict[str, tuple[list[str], list[str]]] = {"biogpt": (["k_proj", "v_proj", "fc2"], ["fc2"])}


class UnsupportedModelError(PipelineError):
    """The model's architecture is not one the pipeline supports."""


@dataclass(frozen=True)
class Family:
    """What differs between model families, as plain data and small functions."""

    name: str
    """``seq2seq`` or ``causal``."""
    auto_class: str
    """The transformers Auto class that loads it."""
    peft_task_type: str
    """PEFT ``TaskType`` value."""

    @property
    def causal(self) -> bool:
        """Whether the prompt and answer share one sequence (decoder-only)."""
        return self.name == "causal"

    def answer_room(self, tokenizer: Any, labels: Sequence[str], chat: bool = False) -> int:
        """Tokens a prompt must leave free in ``model.max_source_length`` for the answer.

        Seq2seq answers go to the decoder (0); a causal model's answer, plus EOS, follows the
        prompt in the same sequence. ``chat``: the prompt went through a chat template.
        """
        if not self.causal:
            return 0
        delimiter = answer_delimiter(chat)
        return 1 + max(len(tokenizer(delimiter + label, add_special_tokens=False).input_ids) for label in labels)

    def prompt_budget(self, tokenizer: Any, labels: Sequence[str], max_length: int, chat: bool = False) -> int:
        """Tokens a prompt may take: ``max_length`` less :meth:`answer_room`.

        Training, ``evaluate`` and the predictor all fit prompts to this one budget, so a
        served prompt is cut exactly where the trained one was.
        """
        return max_length - self.answer_room(tokenizer, labels, chat)

    def encode_example(
        self, tokenizer: Any, prompt_text: str, prompt_ids: list[int], answer: str, chat: bool = False
    ) -> dict[str, Any]:
        """One training example: ``input_ids`` and ``labels`` (``-100`` where no loss is taken).

        Args:
            tokenizer: The model's tokenizer.
            prompt_text: The fitted prompt.
            prompt_ids: ``tokenizer(prompt_text).input_ids``.
            answer: The answer word (``yes``).
            chat: The prompt went through a chat template (no space before the answer).

        Returns:
            Seq2seq: the prompt as ``input_ids``, the answer's target tokens (with EOS) as
            ``labels``. Causal: prompt, answer continuation and EOS as ``input_ids``; the
            same as ``labels`` with the prompt positions masked.
        """
        if not self.causal:
            return {"input_ids": prompt_ids, "labels": list(tokenizer(text_target=answer).input_ids)}
        # The very split the scorer uses, so that training and scoring see the same tokens;
        # the prompt's ids are given, so only prompt + answer is encoded again.
        from pubmedqa_peft.causal_scoring import encode_requests

        answers = [answer_delimiter(chat) + answer]
        # A chat prompt ends with the template's newline, which the harness's split moves
        # into the answer: the context is then encoded without it, so its ids are not reusable.
        reuse = prompt_text == prompt_text.rstrip()
        (request,) = encode_requests(tokenizer, [prompt_text], answers, context_ids=[prompt_ids] if reuse else None)
        (continuation,) = request.continuations
        tail = [*continuation, tokenizer.eos_token_id]
        return {"input_ids": [*request.context, *tail], "labels": [-100] * len(request.context) + tail}


FAMILIES = {
    "seq2seq": Family("seq2seq", "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM"),
    "causal": Family("causal", "AutoModelForCausalLM", "CAUSAL_LM"),
}


def family_of(config: Any, name: str = "model.name") -> Family:
    """The family of a model, from its config (``model_type``), never from its name.

    Args:
        config: The model's ``PretrainedConfig`` (``AutoConfig.from_pretrained``).
        name: What to call the model in the error (``model.name='...'``).

    Returns:
        Its :class:`Family`.

    Raises:
        UnsupportedModelError: For an architecture not in :data:`SUPPORTED`, listing them.
    """
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        raise UnsupportedModelError(
            f"{name}: architecture {model_type!r} is not supported; supported: {', '.join(SUPPORTED)}"
        )
    family = FAMILIES[SUPPORTED[model_type]]
    if family.causal == bool(getattr(config, "is_encoder_decoder", False)):
        raise UnsupportedModelError(f"{name}: {model_type!r} config has is_encoder_decoder={config.is_encoder_decoder}")
    return family


def prepare_tokenizer(tokenizer: Any, family: Family) -> Any:
    """Make a tokenizer ready for batches: a pad token, and right padding for training.

    A tokenizer without a pad token pads with its end-of-sequence token (GPT-2, Llama,
    Mistral ship none); padded positions are masked, so the choice changes no number.

    Raises:
        UnsupportedModelError: If it has no end-of-sequence token either.
    """
    if tokenizer.eos_token_id is None:
        raise UnsupportedModelError(f"the tokenizer {type(tokenizer).__name__} defines no end-of-sequence token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if family.causal:
        tokenizer.padding_side = "right"
    return tokenizer
