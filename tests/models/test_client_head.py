"""The client's head: prefetching its weights changes no logits and is used only where
it can pay (a CPU head small enough to stay in the cache)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig

from plexus.models.head import PREFETCH_MAX_BYTES, ClientHead


def _head(hidden: int, vocab: int) -> ClientHead:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden, vocab_size=vocab, num_hidden_layers=1)
    return ClientHead(config).eval()


def test_prefetch_leaves_the_logits_alone() -> None:
    head = _head(64, 500)
    hidden = torch.randn(1, 64)
    before = head.logits(hidden)
    head.prefetch()
    assert torch.equal(head.logits(hidden), before)


def test_prefetch_is_used_only_for_a_small_cpu_head() -> None:
    small = _head(64, 500)
    assert small.lm_head.weight.nbytes <= PREFETCH_MAX_BYTES and small.prefetch_helps
    large = _head(1024, PREFETCH_MAX_BYTES // (4 * 1024) + 1)  # fp32: just over the limit
    assert large.lm_head.weight.nbytes > PREFETCH_MAX_BYTES
    assert not large.prefetch_helps
    assert not small.to(torch.device("meta")).prefetch_helps  # not a CPU head
