"""What a span's decode step costs beyond its arithmetic: Python and torch's per-operation cost.

    python benchmarks/span_overhead.py [--steps 400] [--hidden 64 512]

A 4-block Llama span (random weights, fp32, one torch thread) decodes one token at a time
after a 16-token prefill; the median step time is printed for each hidden size. At hidden
size 64 the matrix products take a few microseconds, so that step is almost all overhead:
the operations' dispatch and the Python around them (docs/performance.md, stop 24). The
overhead is the same at larger sizes, where the arithmetic adds to it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig

from plexus.models.span import SpanModel


def median_step_us(hidden: int, steps: int) -> float:
    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        num_hidden_layers=4,
        vocab_size=1000,
        max_position_embeddings=16 + steps + 1,
    )
    config._attn_implementation = "sdpa"
    span = SpanModel(config, 0, 3).eval()
    cache = span.new_cache()
    span(torch.randn(1, 16, hidden), torch.ones(1, 16, dtype=torch.long), cache)
    inputs = [torch.randn(1, 1, hidden) for _ in range(steps)]
    masks = [torch.ones(1, 17 + i, dtype=torch.long) for i in range(steps)]
    times = []
    for x, mask in zip(inputs, masks, strict=True):
        start = time.perf_counter()
        span(x, mask, cache)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 512])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for hidden in args.hidden:
        us = median_step_us(hidden, args.steps)
        print(f"hidden {hidden}: decode step of 4 blocks, median {us:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
