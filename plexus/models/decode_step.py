"""One decoder layer's step on new tokens that attend to everything cached, unmasked.

For such a step with sdpa attention, transformers' Llama, Mistral and Qwen2 layers run
exactly the torch operations below. Calling them directly skips the decorators, keyword
plumbing and attention dispatch wrapped around them: about 0.1 ms a layer on a CPU, 9% of
a decode step of a 4-block, 34M-parameter span (docs/performance.md). The outputs are
bit for bit transformers' (tests/models/test_span_equivalence.py); anything else (masks,
other attention implementations, training) goes through transformers' own layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import rotate_half

MAX_GQA_HEAD_DIM = 256  # transformers' sdpa runs grouped attention natively up to here


def applies(layer: nn.Module) -> bool:
    """Whether `layer`'s unmasked single-token step under sdpa attention is the one below
    (the caller checks the attention implementation, once a step: reading it from a
    transformers config costs microseconds)."""
    attention = layer.self_attn
    return not layer.training and (
        attention.num_key_value_groups == 1 or attention.head_dim <= MAX_GQA_HEAD_DIM
    )


def decode_layer(
    layer: nn.Module,
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache: Cache,
) -> torch.Tensor:
    """`layer` on `hidden` [B, 1, H]; `cos`, `sin` [B, 1, 1, D] (rotary, head axis added);
    the new keys and values are appended to `cache`."""
    attention, mlp = layer.self_attn, layer.mlp
    tokens = hidden.shape[:-1]
    heads = (*tokens, -1, attention.head_dim)

    x = layer.input_layernorm(hidden)
    q = attention.q_proj(x).view(heads).transpose(1, 2)
    k = attention.k_proj(x).view(heads).transpose(1, 2)
    v = attention.v_proj(x).view(heads).transpose(1, 2)
    q = (q * cos) + (rotate_half(q) * sin)
    k = (k * cos) + (rotate_half(k) * sin)
    k, v = cache.update(k, v, attention.layer_idx)
    grouped = {"enable_gqa": True} if attention.num_key_value_groups > 1 else {}
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=None, dropout_p=0.0, scale=attention.scaling, is_causal=False, **grouped
    )
    out = out.transpose(1, 2).contiguous().reshape(*tokens, -1).contiguous()
    hidden = hidden + attention.o_proj(out)

    x = layer.post_attention_layernorm(hidden)
    return hidden + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))
