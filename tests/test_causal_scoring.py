"""Tests of answer scoring on tiny random decoder-only models, against a naive loop (offline, CPU)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import peft
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pubmedqa_peft import causal_scoring
from pubmedqa_peft.causal_scoring import CausalRequest, encode_pair, encode_requests, score_answers_causal
from pubmedqa_peft.prompts import fit_prompt

# PEFT calls a transformers method that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

ARCHS = ("tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-gpt2", "tiny-biogpt")
ANSWERS = (" yes", " no", " maybe", " not applicable")
"""" yes" and " no" are one token on every tiny tokenizer, " maybe" three, " not applicable" four."""
TOLERANCE = 1e-4
SHARPEN = 5.0
"""Factor on every weight matrix. Random weights of std 0.02 give near-uniform predictions,
where hiding five prompt tokens moves a score by 1e-4 at most; at 5x it moves it by ~0.1, so
a wrong mask or position shows far above TOLERANCE (asserted in the naive-loop test)."""
PROMPTS = 5
"""Prompts per test: batch size 3 leaves a short last batch, 8 holds them all."""


def _load(model_dir: Path) -> tuple[object, torch.nn.Module]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token is None:
        # GPT-2 and Llama-3 have no pad token: EOS stands in, as the harness does when a
        # tokenizer has neither pad nor unk. Padding is masked, so the choice changes no score.
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, use_safetensors=True).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.mul_(SHARPEN)
    return tokenizer, model


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Callable[[str], Path]) -> Callable[[str], tuple[object, torch.nn.Module]]:
    """A factory: ``loaded(arch)`` is the (tokenizer, sharpened model) of a tiny architecture, loaded once."""
    cache: dict[str, tuple[object, torch.nn.Module]] = {}

    def get(arch: str) -> tuple[object, torch.nn.Module]:
        if arch not in cache:
            cache[arch] = _load(tiny_model_dir(arch))
        return cache[arch]

    return get


@pytest.fixture(scope="module")
def prompts_for(pqal_rows: list[dict]) -> Callable[[object], list[str]]:
    """Real PubMedQA prompts of 60 to 96 tokens (context cut token-wise), different lengths for padding."""
    rows = pqal_rows[:PROMPTS]

    def make(tokenizer: object) -> list[str]:
        return [fit_prompt(tokenizer, r["question"], r["context"], 60 + 9 * i) for i, r in enumerate(rows)]

    return make


def naive_scores(model: torch.nn.Module, requests: list[CausalRequest]) -> np.ndarray:
    """One example, one answer, no padding, no cache: ``model(context + continuation)``, read from the end."""
    out = np.zeros((len(requests), len(requests[0].continuations)))
    with torch.inference_mode():
        for i, request in enumerate(requests):
            for j, cont in enumerate(request.continuations):
                ids = torch.tensor([[*request.context, *cont]])
                logits = model(input_ids=ids, use_cache=False).logits[0, -len(cont) - 1 : -1]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                out[i, j] = logprobs[torch.arange(len(cont)), torch.tensor(cont)].sum().item()
    return out


@pytest.fixture(scope="module")
def naive_for() -> Callable[..., np.ndarray]:
    """``naive_for(key, model, requests)``: :func:`naive_scores`, computed once per key."""
    done: dict[str, np.ndarray] = {}

    def get(key: str, model: torch.nn.Module, requests: list[CausalRequest]) -> np.ndarray:
        if key not in done:
            done[key] = naive_scores(model, requests)
        return done[key]

    return get


def assert_all_settings_match(model: torch.nn.Module, tokenizer: object, prompts: list[str], ref: np.ndarray) -> None:
    """Every batch size and padding side on the path the cost rule picks, and the other path too."""
    settings = [(side, size, None) for side in causal_scoring.PADDING_SIDES for size in (1, 3, 8)]
    # Both ways of feeding multi-token answers on top of the cache (the tiny models pick one pass here).
    settings += [(side, 3, forced) for side in causal_scoring.PADDING_SIDES for forced in (True, False)]
    for side, size, forced in settings:
        with pytest.MonkeyPatch.context() as patch:
            if forced is not None:
                patch.setattr(causal_scoring, "_one_pass_is_cheaper", lambda *args, forced=forced: forced)
            got = score_answers_causal(model, tokenizer, prompts, ANSWERS, size, padding_side=side, progress=False)
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOLERANCE, err_msg=f"{side=} {size=} {forced=}")


@pytest.fixture
def forward_calls() -> Iterator[Callable[[torch.nn.Module], list[int]]]:
    """``forward_calls(module)`` starts counting the module's forward calls (in a list, thread-safe)."""
    handles = []

    def count(module: torch.nn.Module) -> list[int]:
        calls: list[int] = []
        handles.append(module.register_forward_pre_hook(lambda *_: calls.append(1)))
        return calls

    yield count
    for handle in handles:
        handle.remove()


# --- the harness's tokenization -------------------------------------------------------------


def test_encode_pair_splits_the_joint_encoding_at_the_context_length(loaded: Callable) -> None:
    tokenizer, _ = loaded("tiny-llama")
    context = "Question: Is it?\nAnswer the question with yes or no."
    ctx, cont = encode_pair(tokenizer, context, " not applicable")
    whole = tokenizer(context + " not applicable").input_ids
    assert ctx == tokenizer(context).input_ids and ctx[0] == tokenizer.bos_token_id  # BOS as the tokenizer adds it
    assert cont == whole[len(ctx) :] and len(cont) > 1
    # Trailing whitespace of the context moves to the continuation.
    assert encode_pair(tokenizer, context + " ", "yes") == (ctx, tokenizer(context + " yes").input_ids[len(ctx) :])
    # An empty context is the prefix token (BOS) alone; the continuation is encoded on its own.
    assert encode_pair(tokenizer, "", " yes") == ([tokenizer.bos_token_id], tokenizer(" yes").input_ids)
    with pytest.raises(ValueError, match="no tokens of its own"):
        encode_pair(tokenizer, context, "")


def test_biogpt_joint_encoding_changes_the_context_but_the_split_stays_at_its_own_length(loaded: Callable) -> None:
    tokenizer, _ = loaded("tiny-biogpt")
    context = "Question: Does aspirin help?\nContext: We studied 40 patients.\nAnswer the question with yes or no."
    alone = tokenizer(context).input_ids
    whole = tokenizer(context + " yes").input_ids
    # Moses keeps "no." one word when a lowercase word follows: the context's own tokens change.
    assert whole[: len(alone)] != alone
    assert tokenizer.convert_ids_to_tokens(alone[-2:]) == ["no</w>", ".</w>"]
    assert tokenizer.convert_ids_to_tokens(whole[len(alone) - 2 :]) == ["no", ".</w>", "yes</w>"]
    ctx, cont = encode_pair(tokenizer, context, " yes")
    assert ctx == alone  # the model reads the context as encoded alone ...
    assert cont == whole[len(alone) :]  # ... then the joint encoding's tail: "yes</w>"
    [request] = encode_requests(tokenizer, [context], [" yes", " maybe"])
    assert request == CausalRequest(tuple(ctx), (tuple(cont), tuple(encode_pair(tokenizer, context, " maybe")[1])))


# --- equality with the naive loop -----------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_equal_a_naive_loop(arch: str, loaded: Callable, prompts_for: Callable, naive_for: Callable) -> None:
    tokenizer, model = loaded(arch)
    prompts = prompts_for(tokenizer)
    requests = encode_requests(tokenizer, prompts, ANSWERS)
    assert {len(c) for r in requests for c in r.continuations} >= {1, 3}  # single- and multi-token answers
    assert len({len(r.context) for r in requests}) == PROMPTS  # every batch is really padded
    ref = naive_for(arch, model, requests)
    # The model is sensitive enough for TOLERANCE to mean something: prompts move scores by far more.
    assert ref.std(axis=0).min() > 100 * TOLERANCE
    assert_all_settings_match(model, tokenizer, prompts, ref)


def _adapter(model: torch.nn.Module, method: str) -> torch.nn.Module:
    if method == "lora":
        # init_lora_weights=False: a non-zero update, so the adapter visibly changes scores.
        config = peft.LoraConfig(
            task_type="CAUSAL_LM", r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
    elif method == "prompt":
        config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    else:
        config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    torch.manual_seed(1)
    return peft.get_peft_model(copy.deepcopy(model), config).eval()


@pytest.mark.parametrize("method", ["lora", "prompt", "prefix"])
def test_peft_wrappers_equal_a_naive_loop_through_the_wrapper(
    method: str, loaded: Callable, prompts_for: Callable, naive_for: Callable
) -> None:
    tokenizer, base = loaded("tiny-llama")
    prompts = prompts_for(tokenizer)
    wrapped = _adapter(base, method)
    requests = encode_requests(tokenizer, prompts, ANSWERS)
    ref = naive_for(method, wrapped, requests)  # through the wrapper: soft prompt, prefixes, LoRA all apply
    stock = naive_for("tiny-llama", base, requests)
    assert np.abs(ref - stock).min() > 100 * TOLERANCE  # the adapter changes every score
    # Prompt tuning pads right whatever padding_side says (virtual tokens must touch the prompt).
    assert_all_settings_match(wrapped, tokenizer, prompts, ref)


@pytest.mark.parametrize("wrapper", ["stock", "prompt", "prefix"])
def test_without_prompt_reuse_the_scores_are_the_same(
    wrapper: str, loaded: Callable, prompts_for: Callable, naive_for: Callable
) -> None:
    arch = "tiny-gpt2" if wrapper == "stock" else "tiny-llama"
    tokenizer, base = loaded(arch)
    model = base if wrapper == "stock" else _adapter(base, wrapper)
    prompts = prompts_for(tokenizer)
    ref = naive_for(arch if wrapper == "stock" else wrapper, model, encode_requests(tokenizer, prompts, ANSWERS))
    got = score_answers_causal(model, tokenizer, prompts, ANSWERS, 3, reuse_prompt=False, progress=False)
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOLERANCE)


def test_a_sliding_window_shorter_than_the_input_falls_back_to_plain_forwards(
    loaded: Callable, prompts_for: Callable, naive_for: Callable
) -> None:
    tokenizer, base = loaded("tiny-mistral")
    prompts = prompts_for(tokenizer)
    requests = encode_requests(tokenizer, prompts, ANSWERS)
    windowed = copy.deepcopy(base)
    windowed.config.sliding_window = 40  # shorter than every prompt: its cache drops slots
    ref = naive_scores(windowed, requests)
    assert np.abs(ref - naive_for("tiny-mistral", base, requests)).min() > 100 * TOLERANCE  # the window matters
    for side in causal_scoring.PADDING_SIDES:
        got = score_answers_causal(windowed, tokenizer, prompts, ANSWERS, 3, padding_side=side, progress=False)
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOLERANCE)


# --- forward passes -------------------------------------------------------------------------


def test_single_token_answers_take_one_forward_per_batch(
    loaded: Callable, prompts_for: Callable, forward_calls: Callable
) -> None:
    tokenizer, model = loaded("tiny-qwen2")
    prompts = prompts_for(tokenizer)
    answers = (" yes", " no")
    requests = encode_requests(tokenizer, prompts, answers)
    assert all(len(c) == 1 for r in requests for c in r.continuations)
    ref = naive_scores(model, requests)
    calls = forward_calls(model)
    got = score_answers_causal(model, tokenizer, prompts, answers, 3, padding_side="left", progress=False)
    assert len(calls) == 2  # ceil(5 / 3) batches, one forward each
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("one_pass", "per_batch"), [(True, 2), (False, 3)])
def test_multi_token_answers_take_one_more_forward_or_one_per_answer(
    one_pass: bool, per_batch: int, loaded: Callable, prompts_for: Callable, forward_calls: Callable, monkeypatch
) -> None:
    tokenizer, model = loaded("tiny-llama")
    monkeypatch.setattr(causal_scoring, "_one_pass_is_cheaper", lambda *args: one_pass)
    calls = forward_calls(model)
    score_answers_causal(model, tokenizer, prompts_for(tokenizer), ANSWERS, 8, progress=False)
    # The prompt pass, then one pass for all answers or one per multi-token answer (" maybe", " not applicable").
    assert len(calls) == per_batch


def test_one_pass_is_chosen_when_the_copy_is_smaller_than_the_weights(loaded: Callable, prompts_for: Callable) -> None:
    tokenizer, model = loaded("tiny-llama")
    requests = encode_requests(tokenizer, prompts_for(tokenizer), ANSWERS)
    plan = causal_scoring._plan(model)
    with torch.inference_mode():
        prompted = causal_scoring._prompt_pass(model, requests, tokenizer.pad_token_id, plan, "right")
    # tiny-llama's cache per prompt row: 2 layers x (keys + values) x 2 heads x 16 float32 per token.
    row = 2 * 2 * 2 * 16 * 4 * max(len(r.context) for r in requests)
    one_pass = causal_scoring._one_pass_is_cheaper
    assert one_pass(prompted, 8, 2, 8 * row + 1)  # copying 8 rows beats reading the weights once more
    assert not one_pass(prompted, 8, 2, 8 * row)
    assert not one_pass(prompted, PROMPTS, 1, plan.weight_bytes)  # a single answer needs tokens: no copy


# --- prompt kinds and bad inputs ------------------------------------------------------------


@pytest.mark.parametrize("arch", ["tiny-mistral", "tiny-biogpt"])
def test_prompts_as_texts_ids_or_requests_give_the_same_scores(
    arch: str, loaded: Callable, prompts_for: Callable
) -> None:
    tokenizer, model = loaded(arch)
    prompts = prompts_for(tokenizer)[:3]
    ids = [tokenizer(p).input_ids for p in prompts]
    requests = encode_requests(tokenizer, prompts, ANSWERS, context_ids=ids)
    assert requests == encode_requests(tokenizer, prompts, ANSWERS)
    by_text = score_answers_causal(model, tokenizer, prompts, ANSWERS, 2, progress=False)
    np.testing.assert_array_equal(score_answers_causal(model, tokenizer, ids, ANSWERS, 2, progress=False), by_text)
    np.testing.assert_array_equal(score_answers_causal(model, tokenizer, requests, ANSWERS, 2, progress=False), by_text)


def test_bad_inputs_are_refused(loaded: Callable) -> None:
    tokenizer, model = loaded("tiny-gpt2")
    prompt = "Question: Is it?\nAnswer the question with yes or no."
    assert score_answers_causal(model, tokenizer, [], ANSWERS, 2, progress=False).shape == (0, len(ANSWERS))
    with pytest.raises(ValueError, match="batch_size"):
        score_answers_causal(model, tokenizer, [prompt], ANSWERS, 0)
    with pytest.raises(ValueError, match="padding_side"):
        score_answers_causal(model, tokenizer, [prompt], ANSWERS, 1, padding_side="middle")
    with pytest.raises(ValueError, match="no answers"):
        score_answers_causal(model, tokenizer, [prompt], [], 1)
    with pytest.raises(TypeError, match="mix"):
        score_answers_causal(model, tokenizer, [prompt, [1, 2]], ANSWERS, 1)
    # Ids that do not decode back to themselves ("yes" spelled y, e, s) cannot give the answers' split.
    spelled = [*tokenizer(prompt).input_ids, *tokenizer.convert_tokens_to_ids(["y", "e", "s"])]
    assert tokenizer(tokenizer.decode(spelled)).input_ids != spelled
    with pytest.raises(ValueError, match="encode back"):
        score_answers_causal(model, tokenizer, [spelled], ANSWERS, 1)
    with pytest.raises(ValueError, match="continuations"):
        score_answers_causal(model, tokenizer, [CausalRequest((1, 2), ((3,),))], ANSWERS, 1)
    with pytest.raises(ValueError, match="whitespace"):
        encode_requests(tokenizer, [prompt + " "], ANSWERS, context_ids=[[1]])
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        score_answers_causal(model, no_pad, [prompt], ANSWERS, 1)
