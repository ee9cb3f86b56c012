"""Decode steps of different sessions batched into one forward equal separate steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from plexus.models import SpanSession, load_span
from plexus.models.batching import batched_decode, can_batch
from plexus.models.resolve import load_config


@pytest.mark.parametrize("family", ["tiny", "llama"])
def test_batched_decode_equals_one_at_a_time(model_dirs: dict[str, Path], family: str) -> None:
    folder = model_dirs[family]
    size = load_config(folder).hidden_size
    span = load_span(folder, 1, 3, progress=False)
    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randn(1, n, size, generator=gen) for n in (3, 9, 5, 1)]
    solo = [SpanSession(span) for _ in prompts]
    together = [SpanSession(span) for _ in prompts]
    for session_a, session_b, prompt in zip(solo, together, prompts, strict=True):
        session_a.step(prompt)
        session_b.step(prompt)
    for _ in range(6):
        steps = [torch.randn(1, 1, size, generator=gen) for _ in prompts]
        expected = [s.step(h) for s, h in zip(solo, steps, strict=True)]
        assert can_batch(together, steps)
        got = batched_decode(together, steps)
        for e, g in zip(expected, got, strict=True):
            assert (e - g).abs().max().item() <= 1e-4
    for a, b in zip(solo, together, strict=True):
        assert a.length == b.length
        assert b.cache.get_seq_length(1) == b.length


def test_sliding_window_sessions_are_not_batched(model_dirs: dict[str, Path]) -> None:
    span = load_span(model_dirs["mistral"], 0, 1, progress=False)
    size = load_config(model_dirs["mistral"]).hidden_size
    sessions = [SpanSession(span), SpanSession(span)]
    for s in sessions:
        s.step(torch.randn(1, 2, size))
    assert not can_batch(sessions, [torch.randn(1, 1, size)] * 2)
