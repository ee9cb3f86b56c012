"""Decode steps of different sessions, run as one forward.

Each session keeps its own cache. For a batched step their caches are left-padded to a
common length and stacked, the padding masked out, one forward runs, and each session
gets back its row of the output and the new token's keys/values. Padding on the left
does not move positions (they come from the mask's cumulative sum), so the result is
the same as stepping each session alone, up to float reduction order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plexus.models.session import SpanSession


def can_batch(sessions: list[SpanSession], hiddens: list[torch.Tensor]) -> bool:
    """True when these one-token steps can share a forward: same span and blocks, caches
    already filled, and only full-attention blocks (sliding caches evict by position)."""
    if len(sessions) < 2:
        return False
    first = sessions[0]
    kinds = {first.span.layer_types[i] for i in first.blocks}
    return (
        kinds == {"full_attention"}
        and all(s.span is first.span and s.blocks == first.blocks for s in sessions)
        and all(s.length > 0 for s in sessions)
        and all(
            h.dim() == 3 and h.shape[1] == 1 and h.shape[0] == s.batch_size
            for s, h in zip(sessions, hiddens, strict=True)
        )
    )


def batched_decode(sessions: list[SpanSession], hiddens: list[torch.Tensor]) -> list[torch.Tensor]:
    """One forward for several sessions' one-token steps; returns each session's output."""
    span, blocks = sessions[0].span, sessions[0].blocks
    longest = max(s.length for s in sessions)
    combined = span.new_cache()
    for i in blocks:
        keys = [_left_pad(s.cache.layers[i].keys, longest) for s in sessions]
        values = [_left_pad(s.cache.layers[i].values, longest) for s in sessions]
        combined.layers[i].update(torch.cat(keys), torch.cat(values))
    masks = []
    for s in sessions:
        assert s.mask is not None
        padded = F.pad(s.mask, (longest - s.length, 0))
        masks.append(torch.cat([padded, torch.ones_like(padded[:, :1])], dim=1))
    out = span(torch.cat(hiddens), torch.cat(masks), combined, blocks)
    results, row = [], 0
    for s, h in zip(sessions, hiddens, strict=True):
        rows = slice(row, row + h.shape[0])
        for i in blocks:
            layer = combined.layers[i]
            s.cache.layers[i].update(layer.keys[rows, :, -1:], layer.values[rows, :, -1:])
        s._commit(h, torch.cat([s.mask, torch.ones_like(s.mask[:, :1])], dim=1))
        results.append(out[rows])
        row += h.shape[0]
    return results


def _left_pad(t: torch.Tensor, length: int) -> torch.Tensor:
    """[B, heads, L, d] -> [B, heads, length, d] with zeros before the real positions."""
    return F.pad(t, (0, 0, length - t.shape[2], 0))
