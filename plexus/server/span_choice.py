"""Which blocks a server without `--shards` should serve: where the swarm is weakest.

Pure functions of the swarm's announced spans, so they are tested on synthetic swarms
and reused by the simulator.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Coverage:
    """A server's announced span and throughput (tokens/s per block)."""

    start: int
    end: int
    throughput: float


def block_throughput(num_blocks: int, servers: Iterable[Coverage]) -> list[float]:
    """Total announced throughput per block."""
    totals = [0.0] * num_blocks
    for s in servers:
        for b in range(max(0, s.start), min(num_blocks - 1, s.end) + 1):
            totals[b] += max(0.0, s.throughput)
    return totals


def choose_span(
    num_blocks: int,
    span_length: int,
    servers: Iterable[Coverage],
    rng: random.Random | None = None,
) -> tuple[int, int]:
    """The inclusive span of `span_length` blocks that best helps the swarm.

    Uncovered blocks come first: windows are ranked by (number of uncovered blocks,
    lowest throughput among them, then total throughput), and ties are broken at random
    so servers starting together spread out instead of piling onto one span.
    """
    length = max(1, min(span_length, num_blocks))
    totals = block_throughput(num_blocks, servers)
    rng = rng or random.Random()

    def score(start: int) -> tuple[float, float, float]:
        window = totals[start : start + length]
        uncovered = sum(1 for t in window if t <= 0.0)
        return (-uncovered, min(window), sum(window))

    candidates = range(num_blocks - length + 1)
    best = min(score(s) for s in candidates)
    # Servers with identical views would make identical choices: pick among windows
    # within a small margin of the best, at random.
    margin = 0.05 * max(1e-9, abs(best[1]))
    near = [s for s in candidates if score(s)[0] == best[0] and score(s)[1] <= best[1] + margin]
    start = rng.choice(near)
    return start, start + length - 1


def weakest_throughput(num_blocks: int, servers: Iterable[Coverage]) -> float:
    return min(block_throughput(num_blocks, servers), default=0.0)


def should_move(
    num_blocks: int,
    mine: Coverage,
    others: list[Coverage],
    margin: float = 1.2,
    rng: random.Random | None = None,
) -> tuple[int, int] | None:
    """A better span for this server, or None if moving would not clearly help.

    Moving must never leave a block uncovered, and must raise the swarm's weakest block
    by a factor of `margin`.
    """
    length = mine.end - mine.start + 1
    current = weakest_throughput(num_blocks, [*others, mine])
    start, end = choose_span(num_blocks, length, others, rng)
    if (start, end) == (mine.start, mine.end):
        return None
    after = block_throughput(num_blocks, [*others, Coverage(start, end, mine.throughput)])
    if min(after) <= 0.0:
        return None
    if current > 0.0 and min(after) < current * margin:
        return None
    return start, end
