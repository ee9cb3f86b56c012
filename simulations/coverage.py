"""The swarm's announced coverage, kept incrementally, and span choice through the real
`plexus.server.span_choice` functions.

`choose_span` and `should_move` depend on the other servers only through the total
throughput of each block (`block_throughput`). Throughputs are whole numbers here, so those
totals are exact in any summation order, and passing one `Coverage(b, b, total_b)` per block
gives exactly the result of passing every server: 80 entries instead of 10,000.
"""

from __future__ import annotations

import random

from plexus.server.span_choice import Coverage, choose_span, should_move


class SwarmCoverage:
    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.throughput = [0] * num_blocks
        self.servers = [0] * num_blocks

    def add(self, span: tuple[int, int], throughput: int, sign: int = 1) -> None:
        for b in range(span[0], span[1] + 1):
            self.throughput[b] += sign * throughput
            self.servers[b] += sign

    def remove(self, span: tuple[int, int], throughput: int) -> None:
        self.add(span, throughput, -1)

    def aggregated(self, minus: tuple[tuple[int, int], int] | None = None) -> list[Coverage]:
        totals = list(self.throughput)
        if minus is not None:
            (start, end), throughput = minus
            for b in range(start, end + 1):
                totals[b] -= throughput
        return [Coverage(b, b, float(t)) for b, t in enumerate(totals)]

    def choose(self, length: int, rng: random.Random) -> tuple[int, int]:
        return choose_span(self.num_blocks, length, self.aggregated(), rng)

    def better_span(
        self, span: tuple[int, int], throughput: int, rng: random.Random
    ) -> tuple[int, int] | None:
        mine = Coverage(span[0], span[1], float(throughput))
        return should_move(self.num_blocks, mine, self.aggregated((span, throughput)), rng=rng)

    def uncovered(self) -> int:
        return sum(1 for n in self.servers if n <= 0)

    def min_servers(self) -> int:
        return min(self.servers)

    def min_throughput(self) -> int:
        return min(self.throughput)
