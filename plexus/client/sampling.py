"""Choosing the next token from logits: greedy, or sampled with the usual controls."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from plexus.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 means no top-k cut
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError("temperature must be >= 0")
        if self.top_k < 0:
            raise ConfigError("top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ConfigError("repetition_penalty must be > 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """Stateful only in its random generator, so a seed reproduces a whole generation."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
        """Next token per row of `logits` [B, vocab]; `seen` [B, L] are ids to penalise."""
        logits = logits.float().clone()
        p = self.params
        if p.repetition_penalty != 1.0 and seen is not None and seen.numel():
            picked = logits.gather(1, seen)
            picked = torch.where(
                picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty
            )
            logits.scatter_(1, seen, picked)
        if p.greedy:
            return logits.argmax(-1)
        logits = logits / p.temperature
        if p.top_k:
            kth = torch.topk(logits, min(p.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            probs = sorted_logits.softmax(-1)
            # drop a token when the tokens ranked above it already reach top_p
            drop = probs.cumsum(-1) - probs > p.top_p
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
        probs = logits.softmax(-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
