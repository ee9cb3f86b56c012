"""What the client holds: token embeddings, final norm and LM head."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

from plexus.models.families import family_of

PREFETCH_MAX_BYTES = 32 * 2**20
"""Largest LM head worth re-reading while the servers compute: on the 2-core build
machine a 16 MB head then ran in 0.8 instead of 1.3 ms, and a 128 MB one gained nothing
and cost the servers a core (docs/performance.md)."""


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

    @property
    def prefetch_helps(self) -> bool:
        """Whether `prefetch` pays: on a CPU, for a head small enough to stay cached."""
        weight = self.lm_head.weight
        return weight.device.type == "cpu" and weight.nbytes <= PREFETCH_MAX_BYTES

    @torch.inference_mode()
    def prefetch(self) -> None:
        """Read the final norm's and LM head's weights (a forward of zeros), so that the
        next `logits` finds them in the CPU's cache. The client calls it while it waits
        for the last server: by then the blocks' weights, streamed by the servers on the
        same machine or by this process itself, have pushed the head's out."""
        weight = self.lm_head.weight
        self.logits(torch.zeros(1, weight.shape[1], dtype=weight.dtype, device=weight.device))
