"""Model folders for tests: the tiny model and random-weight Llama/Mistral/Qwen2.

The `model_dirs` fixture is registered in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from plexus.models.tiny import write_tiny_model

SMALL = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=0,
)


def random_configs() -> dict[str, object]:
    return {
        # tied embeddings, sharded checkpoint
        "llama": LlamaConfig(**SMALL, tie_word_embeddings=True),
        # every layer sliding, with a window the 24 decode steps run past
        "mistral": MistralConfig(**SMALL, sliding_window=5, tie_word_embeddings=False),
        # mixed full and sliding layers
        "qwen2": Qwen2Config(
            **SMALL,
            use_sliding_window=True,
            sliding_window=5,
            max_window_layers=2,
            tie_word_embeddings=False,
        ),
    }


FAMILY_NAMES = ["tiny", "llama", "mistral", "qwen2"]


def write_model_dirs(root: Path) -> dict[str, Path]:
    dirs = {"tiny": write_tiny_model(root / "tiny")}
    for name, config in random_configs().items():
        torch.manual_seed(1234)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        # Larger-than-default weights so tokens differ step to step.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.15)
        shard = "60KB" if name == "llama" else "50MB"
        model.save_pretrained(root / name, max_shard_size=shard)
        dirs[name] = root / name
    return dirs
