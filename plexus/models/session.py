"""One inference session on a span: its KV cache, attention mask and input history.

A session advances by `step` (a prefill, a decode token, or a multi-token chunk after a
prefix). It keeps every input it was given so that it can roll its cache back to an
earlier length and so that a replacement server can be rebuilt from the same history.
"""

from __future__ import annotations

import torch

from plexus.errors import SessionError
from plexus.models.span import SpanModel


class SpanSession:
    """Server-side state of one client's session on one span."""

    def __init__(self, span: SpanModel, blocks: range | None = None) -> None:
        """A session over all of `span`, or over `blocks` (local indices) of it."""
        self.span = span
        self.blocks = blocks if blocks is not None else range(span.num_blocks)
        if not (
            0 <= self.blocks.start < self.blocks.stop <= span.num_blocks and self.blocks.step == 1
        ):
            raise SessionError(f"blocks {self.blocks} are not a sub-range of the span")
        self.cache = span.new_cache()
        self.mask: torch.Tensor | None = None  # [B, length]: 1 real token, 0 padding
        self._inputs: list[torch.Tensor] = []  # hidden states given, in order

    @property
    def length(self) -> int:
        """Positions held in the cache (padding included)."""
        return 0 if self.mask is None else self.mask.shape[1]

    @property
    def batch_size(self) -> int | None:
        return None if self.mask is None else self.mask.shape[0]

    def step(self, hidden: torch.Tensor, new_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run `hidden` [B, T, H] after what the cache holds; `new_mask` [B, T] marks padding.

        On failure the session is left exactly as it was before the call.
        """
        new_mask = self._check(hidden, new_mask)
        mask = new_mask if self.mask is None else torch.cat([self.mask, new_mask], dim=1)
        length_before = self.length
        try:
            out = self.span(hidden, mask, self.cache, self.blocks)
        except Exception:
            self.rollback(length_before)
            raise
        self._commit(hidden, mask)
        return out

    def _commit(self, hidden: torch.Tensor, mask: torch.Tensor) -> None:
        self.mask = mask
        self._inputs.append(hidden.detach().clone())

    def history(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All inputs so far as one chunk [B, length, H] and the mask [B, length]."""
        if self.mask is None:
            return None
        return torch.cat(self._inputs, dim=1), self.mask

    def rollback(self, length: int) -> None:
        """Forget everything after the first `length` positions."""
        if not 0 <= length <= self.length:
            raise SessionError(f"cannot roll back to {length}: session holds {self.length}")
        if length == self.length:
            return
        history = self.history()
        kept_inputs = history[0][:, :length] if history is not None else None
        kept_mask = self.mask[:, :length] if self.mask is not None else None
        self.cache = self.span.new_cache()
        self.mask, self._inputs = None, []
        if length and kept_inputs is not None and kept_mask is not None:
            # Replaying is exact and works for every cache type, sliding windows included.
            self.step(kept_inputs, kept_mask)

    @classmethod
    def from_history(
        cls,
        span: SpanModel,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        blocks: range | None = None,
    ) -> tuple[SpanSession, torch.Tensor]:
        """A session rebuilt by replaying `hidden` [B, L, H] with `mask` [B, L] (failover)."""
        session = cls(span, blocks)
        return session, session.step(hidden, mask)

    def _check(self, hidden: torch.Tensor, new_mask: torch.Tensor | None) -> torch.Tensor:
        if hidden.dim() != 3 or hidden.shape[-1] != self.span.config.hidden_size:
            raise SessionError(
                f"hidden states must be [batch, tokens, {self.span.config.hidden_size}], "
                f"got {list(hidden.shape)}"
            )
        batch, tokens = hidden.shape[:2]
        if tokens == 0:
            raise SessionError("a step needs at least one token")
        if self.batch_size is not None and batch != self.batch_size:
            raise SessionError(f"session has batch size {self.batch_size}, step has {batch}")
        if new_mask is None:
            return torch.ones(batch, tokens, dtype=torch.long, device=hidden.device)
        if tuple(new_mask.shape) != (batch, tokens):
            raise SessionError(f"mask must be [{batch}, {tokens}], got {list(new_mask.shape)}")
        return new_mask.to(device=hidden.device, dtype=torch.long)


def stateless_forward(
    span: SpanModel, hidden: torch.Tensor, mask: torch.Tensor, blocks: range | None = None
) -> torch.Tensor:
    """The span (or `blocks` of it) on a whole sequence with no cache kept (audits)."""
    return span(hidden, mask.to(device=hidden.device, dtype=torch.long), None, blocks)
