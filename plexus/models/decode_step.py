"""One decoder layer's step on new tokens that attend to everything cached, unmasked.

For such a step with sdpa attention, transformers' Llama, Mistral and Qwen2 layers run
exactly the torch operations below. Calling them directly skips the decorators, keyword
plumbing and attention dispatch wrapped around them: about 0.1 ms a layer on a CPU, 9% of
a decode step of a 4-block, 34M-parameter span (docs/performance.md). The outputs are
bit for bit transformers' (tests/models/test_span_equivalence.py); anything else (masks,
other attention implementations, training) goes through transformers' own layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import rotate_half

MAX_GQA_HEAD_DIM = 256  # transformers' sdpa runs grouped attention natively up to here


def fits(layer: nn.Module) -> bool:
    """Whether `layer`'s unmasked single-token step under sdpa attention, in eval mode, is
    the one below (the caller checks the attention implementation, once a step: reading
    it from a transformers config costs microseconds)."""
    attention = layer.self_attn
    return attention.num_key_value_groups == 1 or attention.head_dim <= MAX_GQA_HEAD_DIM


Step = Callable[[torch.Tensor], torch.Tensor]


class LayerPlan(NamedTuple):
    """What `decode_layer` needs of one layer, looked up once.

    Reaching a submodule through `nn.Module.__getattr__` and calling it through
    `nn.Module.__call__` cost a few microseconds each, and a step of one layer makes 30
    of them: 0.2-0.4 ms of a 4-block span's decode step on a CPU. The plan holds the
    projections' weights (called with `F.linear`, what `nn.Linear.forward` does) and the
    norms' and activation's `forward`; a module with hooks, or a projection that is not a
    plain `nn.Linear`, is kept as the module and called as one.
    """

    layer: nn.Module
    input_norm: Step
    q: Step
    k: Step
    v: Step
    o: Step
    post_norm: Step
    gate: Step
    up: Step
    down: Step
    act: Step
    head_dim: int
    layer_idx: int
    scaling: float
    grouped: dict[str, bool]

    @classmethod
    def of(cls, layer: nn.Module) -> LayerPlan:
        attention, mlp = layer.self_attn, layer.mlp
        return cls(
            layer,
            _forward(layer.input_layernorm),
            _linear(attention.q_proj),
            _linear(attention.k_proj),
            _linear(attention.v_proj),
            _linear(attention.o_proj),
            _forward(layer.post_attention_layernorm),
            _linear(mlp.gate_proj),
            _linear(mlp.up_proj),
            _linear(mlp.down_proj),
            _forward(mlp.act_fn),
            attention.head_dim,
            attention.layer_idx,
            attention.scaling,
            {"enable_gqa": True} if attention.num_key_value_groups > 1 else {},
        )


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks) or bool(
        nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks
    )


def _forward(module: nn.Module) -> Step:
    return module if _hooked(module) else module.forward  # type: ignore[no-any-return]


def _linear(module: nn.Module) -> Step:
    if type(module) is not nn.Linear or _hooked(module):
        return module
    weight, bias = module.weight, module.bias
    return lambda x: F.linear(x, weight, bias)


def decode_layer(
    plan: LayerPlan,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache: Cache,
) -> torch.Tensor:
    """`plan`'s layer on `hidden` [B, 1, H]; `cos`, `sin` [B, 1, 1, D] (rotary, head axis
    added); the new keys and values are appended to `cache`."""
    tokens = hidden.shape[:-1]
    heads = (*tokens, -1, plan.head_dim)

    x = plan.input_norm(hidden)
    q = plan.q(x).view(heads).transpose(1, 2)
    k = plan.k(x).view(heads).transpose(1, 2)
    v = plan.v(x).view(heads).transpose(1, 2)
    q = (q * cos) + (rotate_half(q) * sin)
    k = (k * cos) + (rotate_half(k) * sin)
    k, v = cache.update(k, v, plan.layer_idx)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=None, dropout_p=0.0, scale=plan.scaling, is_causal=False, **plan.grouped
    )
    out = out.transpose(1, 2).contiguous().reshape(*tokens, -1).contiguous()
    hidden = hidden + plan.o(out)

    x = plan.post_norm(hidden)
    return hidden + plan.down(plan.act(plan.gate(x)) * plan.up(x))
