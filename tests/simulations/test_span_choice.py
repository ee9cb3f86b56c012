"""Per-block aggregated coverage gives the real span functions exactly their usual answers."""

from __future__ import annotations

import random

from plexus.server.span_choice import Coverage, choose_span, should_move
from simulations.coverage import SwarmCoverage


def test_aggregated_coverage_chooses_like_the_full_list() -> None:
    rng = random.Random(3)
    blocks = 40
    cov = SwarmCoverage(blocks)
    everyone: list[Coverage] = []
    for _ in range(300):
        length = rng.randint(1, 12)
        seed = rng.random()
        span = cov.choose(length, random.Random(seed))
        assert span == choose_span(blocks, length, everyone, random.Random(seed))
        throughput = rng.choice([12, 90, 280, 900])
        cov.add(span, throughput)
        everyone.append(Coverage(span[0], span[1], float(throughput)))
    for i in range(0, 300, 7):
        mine = everyone[i]
        others = everyone[:i] + everyone[i + 1 :]
        seed = rng.random()
        expected = should_move(blocks, mine, others, rng=random.Random(seed))
        got = cov.better_span((mine.start, mine.end), int(mine.throughput), random.Random(seed))
        assert got == expected
