"""Faster T5 forward passes that give the same numbers up to float rounding.

:func:`enable` is applied by :func:`pubmedqa_peft.modeling.load_base_model` to every
model the pipeline trains or scores, so training, evaluation and the benchmark run the
same code. Each change is measured in ``benchmarks/speed.py`` and its equivalence is
tested in ``tests/test_speed_equivalence.py``:

* **One attention mask per forward, not one per layer.** T5 adds a relative position
  bias to every attention score. transformers' SDPA path merges that bias with the
  padding mask (a ``torch.where`` over ``batch x heads x query x key`` floats) again in
  every layer, although all layers of a stack share both. :func:`sdpa_shared_bias` is
  the same SDPA call with the merged mask computed once per stack and forward (it is
  kept on the bias tensor, so it lives exactly as long as that forward). Bit-identical
  results: the merge is the same operation on the same tensors.
* **Fused tanh-GELU.** flan-t5's ``gelu_new`` is written as eight elementwise torch ops;
  ``torch.nn.functional.gelu(approximate="tanh")`` is the same formula in one kernel
  (results differ by float rounding, ~1e-7 relative).
* **Fused RMS norm.** ``T5LayerNorm`` makes four passes over the activations (square,
  mean, scale, weight); :func:`fused_rms_norm` is ``torch.nn.functional.rms_norm``, one
  kernel for the same float32 formula (bit-identical here; about half the time of the
  stock norm on a batch of 8 prompts).

Not done here, because it would change results beyond rounding: bfloat16 weights or
autocast on CPU (see :func:`pubmedqa_peft.modeling.choose_dtype`).
"""

from __future__ import annotations

import logging
import types
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.activations import ACT2FN, NewGELUActivation
from transformers.integrations.sdpa_attention import create_position_bias_mask, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

log = logging.getLogger(__name__)

SHARED_BIAS_SDPA = "sdpa_shared_bias"
"""Name of :func:`sdpa_shared_bias` in transformers' attention registry."""

_MERGED = "_pubmedqa_merged_mask"


def sdpa_shared_bias(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    position_bias: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The SDPA attention of transformers, merging T5's position bias and mask once per forward.

    A T5 stack computes ``position_bias`` in its first layer and hands the same tensor,
    with the same mask tensor, to every later layer. The merged float mask is stored on
    the bias tensor the first time and reused while the mask is the same object, so it
    is freed with the bias at the end of the forward. Cases where transformers builds a
    causal mask itself (no mask given to a causal layer) go to the stock function.

    Args:
        module: The attention module (``T5Attention``).
        query: ``(batch, heads, q, d)``.
        key: ``(batch, heads, k, d)``.
        value: ``(batch, heads, k, d)``.
        attention_mask: The stack's mask (None, boolean or additive float).
        dropout: Attention dropout probability.
        scaling: Score scale (1.0 for T5).
        is_causal: Overrides ``module.is_causal``.
        position_bias: T5's relative position bias ``(1, heads, q, k)``.
        **kwargs: Passed on to transformers' SDPA function.

    Returns:
        ``(attention output, None)`` exactly as ``sdpa_attention_forward``.
    """
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if position_bias is None or (causal and attention_mask is None):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            position_bias=position_bias,
            **kwargs,
        )
    cached = getattr(position_bias, _MERGED, None)
    if cached is not None and cached[0] is attention_mask:
        merged = cached[1]
    else:
        # With a mask given (or a non-causal layer) transformers merges exactly so, then
        # calls SDPA with is_causal=False.
        merged = create_position_bias_mask(position_bias, attention_mask, False, query, key)
        setattr(position_bias, _MERGED, (attention_mask, merged))
    return sdpa_attention_forward(
        module, query, key, value, merged, dropout=dropout, scaling=scaling, is_causal=False, **kwargs
    )


AttentionInterface.register(SHARED_BIAS_SDPA, sdpa_shared_bias)
AttentionMaskInterface.register(SHARED_BIAS_SDPA, sdpa_mask)


def _cross_cache_in_use(cache: Any, layer_idx: int | None) -> bool:
    """Whether the cache already holds cross-attention keys/values for this layer (e.g. PEFT prefixes)."""
    cross = getattr(cache, "cross_attention_cache", None)
    if cross is None or layer_idx is None:
        return cache is not None and not hasattr(cache, "cross_attention_cache")
    return cross.get_seq_length(layer_idx) > 0


def absorbed_cross_attention(
    self: Any,
    hidden_states: torch.Tensor,
    mask: torch.Tensor | None = None,
    key_value_states: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
    past_key_values: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, None]:
    """T5 cross-attention for a few decoder tokens without projecting the encoder states.

    Stock T5 projects all ``L`` encoder states into keys and values in every decoder
    layer (``2 L d inner`` multiply-adds, 14% of scoring flan-t5-small). With few query
    tokens it is cheaper to move the projections to the query side:
    ``q . (W_k h) = (W_k^T q) . h`` and ``sum_l p_l W_v h_l = W_v (sum_l p_l h_l)``, which
    costs ``2 heads L d`` per query token instead. Used in eval mode only, for fewer
    query tokens than the head size, when the key projection is a plain linear layer
    (LoRA may wrap the query and value projections: they are applied as modules) and no
    cross-attention cache is in use (PEFT prefix tuning brings one); otherwise, and for
    ``output_attentions``, the stock forward runs. Cross-attention has no position bias
    in T5, so ``position_bias`` is passed through untouched.
    """
    b, q = hidden_states.shape[:2]
    if (
        key_value_states is None
        or self.training
        or q >= self.key_value_proj_dim
        or type(self.k) is not torch.nn.Linear
        or kwargs.get("output_attentions")
        or _cross_cache_in_use(past_key_values, self.layer_idx)
    ):
        return type(self).forward(self, hidden_states, mask, key_value_states, position_bias, past_key_values, **kwargs)
    heads, dk = self.n_heads, self.key_value_proj_dim
    states = key_value_states  # (b, L, d)
    query = self.q(hidden_states).view(b, q, heads, dk).transpose(1, 2)  # (b, heads, q, dk)
    absorbed = torch.matmul(query, self.k.weight.view(heads, dk, -1))  # (b, heads, q, d)
    scores = torch.bmm(absorbed.reshape(b, heads * q, -1), states.transpose(1, 2)).view(b, heads, q, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores.float(), dim=-1).to(states.dtype)
    context = torch.bmm(probs.view(b, heads * q, -1), states).view(b, heads, q, -1)  # (b, heads, q, d)
    # The value projection of every head's context, keeping head h's own output columns.
    values = self.v(context).view(b, heads, q, heads, dk).diagonal(dim1=1, dim2=3)  # (b, q, dk, heads)
    out = self.o(values.permute(0, 1, 3, 2).reshape(b, q, heads * dk))
    return out, position_bias, None


def fused_rms_norm(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """``T5LayerNorm.forward`` as one ``rms_norm`` kernel, for float32 weights and inputs.

    Half-precision weights (where T5 casts between the steps) take the stock forward.
    """
    weight = self.weight
    if weight.dtype != torch.float32 or hidden_states.dtype != torch.float32:
        return type(self).forward(self, hidden_states)
    return torch.nn.functional.rms_norm(hidden_states, weight.shape, weight, self.variance_epsilon)


def enable(model: Any) -> list[str]:
    """Switch a loaded T5 model to the fast paths above, in place.

    Only T5 (``model_type == "t5"``) is changed: other architectures are returned as
    they are, since these paths were measured and tested on T5 alone. A T5 loaded with
    another attention implementation than SDPA (e.g. ``eager``) keeps its attention.

    Args:
        model: A transformers model (before any PEFT wrapping).

    Returns:
        The names of the fast paths applied (for the log).
    """
    applied: list[str] = []
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "t5":
        return applied
    if getattr(config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(SHARED_BIAS_SDPA)
        applied.append("shared position-bias mask")
    crossed = 0
    for module in model.modules():
        inner = getattr(module, "EncDecAttention", None)
        if type(inner).__name__ == "T5Attention":
            inner.forward = types.MethodType(absorbed_cross_attention, inner)
            crossed += 1
    if crossed:
        applied.append(f"query-side cross-attention in {crossed} decoder layers")
    swapped = 0
    for module in model.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = ACT2FN["gelu_pytorch_tanh"]
            swapped += 1
    if swapped:
        applied.append(f"fused tanh-GELU in {swapped} feed-forward blocks")
    norms = 0
    for module in model.modules():
        if type(module).__name__ == "T5LayerNorm":
            module.forward = types.MethodType(fused_rms_norm, module)
            norms += 1
    if norms:
        applied.append(f"fused RMS norm in {norms} layer norms")
    return applied
