"""A chain of spans run in one process: the reference the distributed path must match.

Used by tests (to check splits against `transformers`) and by `plexus demo --local`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from plexus.models.head import ClientHead
from plexus.models.session import SpanSession
from plexus.models.span import SpanModel


@dataclass
class GreedyResult:
    token_ids: torch.Tensor  # [B, new_tokens]
    step_logits: list[torch.Tensor]  # one [B, vocab] per generated token


class LocalChain:
    """Client head + spans covering every block, each span with its own session."""

    def __init__(self, head: ClientHead, spans: list[SpanModel]) -> None:
        blocks = [b for s in spans for b in range(s.start, s.end + 1)]
        if blocks != list(range(head.config.num_hidden_layers)):
            raise ValueError(f"spans must cover blocks 0..{head.config.num_hidden_layers - 1}")
        self.head, self.spans = head, spans

    @torch.inference_mode()
    def greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 16,
        eos_token_id: int | None = None,
    ) -> GreedyResult:
        """Greedy decoding of a (left-padded) batch, one session per span."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        sessions = [SpanSession(span) for span in self.spans]
        tokens, logits_per_step = [], []
        step_ids, step_mask = input_ids, attention_mask
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        for _ in range(max_new_tokens):
            hidden = self.head.embed(step_ids)
            for session in sessions:
                hidden = session.step(hidden, step_mask)
            logits = self.head.logits(hidden[:, -1]).float()
            next_ids = logits.argmax(-1)
            if eos_token_id is not None:
                pad = self.head.config.pad_token_id or eos_token_id
                next_ids = next_ids.masked_fill(finished, pad)
                finished |= next_ids == eos_token_id
            tokens.append(next_ids)
            logits_per_step.append(logits)
            if eos_token_id is not None and bool(finished.all()):
                break
            step_ids = next_ids[:, None]
            step_mask = torch.ones_like(step_ids)
        return GreedyResult(torch.stack(tokens, dim=1), logits_per_step)
