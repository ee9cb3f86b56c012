"""What the client holds: token embeddings, final norm and LM head."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

from plexus.models.families import family_of


class ClientHead(nn.Module):
    """Turns token ids into the first span's input, and the last span's output into logits."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.config = config
        family = family_of(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.norm = family.rms_norm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @torch.inference_mode()
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden))
