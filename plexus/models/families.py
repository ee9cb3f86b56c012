"""Model families Plexus can split into spans, and how to build their parts.

Llama, Mistral and Qwen2 share one shape: decoder layers called as
`layer(hidden, attention_mask=, position_ids=, cache=, use_cache=, position_embeddings=)`,
a rotary embedding module, an RMSNorm, and weights named `model.layers.{i}.*`,
`model.embed_tokens.weight`, `model.norm.weight`, `lm_head.weight`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2

from plexus.errors import UnsupportedModelError

LAYER_PREFIX = "model.layers."
EMBED_KEY = "model.embed_tokens.weight"
NORM_KEY = "model.norm.weight"
LM_HEAD_KEY = "lm_head.weight"


@dataclass(frozen=True)
class Family:
    name: str
    decoder_layer: type[nn.Module]
    rotary_embedding: type[nn.Module]
    rms_norm: type[nn.Module]


FAMILIES: dict[str, Family] = {
    "llama": Family(
        "llama",
        modeling_llama.LlamaDecoderLayer,
        modeling_llama.LlamaRotaryEmbedding,
        modeling_llama.LlamaRMSNorm,
    ),
    "mistral": Family(
        "mistral",
        modeling_mistral.MistralDecoderLayer,
        modeling_mistral.MistralRotaryEmbedding,
        modeling_mistral.MistralRMSNorm,
    ),
    "qwen2": Family(
        "qwen2",
        modeling_qwen2.Qwen2DecoderLayer,
        modeling_qwen2.Qwen2RotaryEmbedding,
        modeling_qwen2.Qwen2RMSNorm,
    ),
}


def family_of(config: PretrainedConfig) -> Family:
    """The family for `config.model_type`, or a clear error naming the supported ones."""
    family = FAMILIES.get(getattr(config, "model_type", ""))
    if family is None:
        supported = ", ".join(sorted(FAMILIES))
        archs = getattr(config, "architectures", None) or [config.model_type]
        raise UnsupportedModelError(
            f"architecture {', '.join(archs)} (model_type {config.model_type!r}) is not "
            f"supported; Plexus can split these families: {supported}"
        )
    return family


def layer_types(config: PretrainedConfig) -> list[str]:
    """Attention type of every layer: 'full_attention' or 'sliding_attention'."""
    types = getattr(config, "layer_types", None)
    if types:
        return list(types)
    sliding = getattr(config, "sliding_window", None) and config.model_type == "mistral"
    kind = "sliding_attention" if sliding else "full_attention"
    return [kind] * config.num_hidden_layers
