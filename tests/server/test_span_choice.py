"""Choosing and moving spans where the swarm is weakest."""

from __future__ import annotations

import random
from collections import Counter

from plexus.server.span_choice import Coverage, block_throughput, choose_span, should_move


def test_uncovered_blocks_come_first() -> None:
    swarm = [Coverage(0, 3, 1000.0), Coverage(8, 11, 1000.0)]
    for seed in range(20):
        assert choose_span(12, 4, swarm, random.Random(seed)) == (4, 7)


def test_weakest_blocks_next_when_everything_is_covered() -> None:
    swarm = [Coverage(0, 5, 100.0), Coverage(6, 11, 10.0)]
    start, end = choose_span(12, 3, swarm, random.Random(0))
    assert start >= 6 and end <= 11


def test_servers_starting_together_spread_out() -> None:
    # An empty swarm: every window ties, so choices must differ between servers.
    picks = Counter(choose_span(32, 8, [], random.Random(seed)) for seed in range(50))
    assert len(picks) > 5


def test_span_longer_than_the_model_is_the_whole_model() -> None:
    assert choose_span(8, 20, [], random.Random(0)) == (0, 7)


def test_block_throughput_sums_spans() -> None:
    assert block_throughput(4, [Coverage(0, 1, 2.0), Coverage(1, 3, 3.0)]) == [2, 5, 3, 3]


def test_move_only_when_it_clearly_helps_and_never_uncovers() -> None:
    # Two servers on 0-3, none on 4-7 -> the duplicate should move to 4-7.
    mine = Coverage(0, 3, 100.0)
    assert should_move(8, mine, [Coverage(0, 3, 100.0)], rng=random.Random(0)) == (4, 7)
    # The only server of 0-3 must stay, even though 4-7 is weaker than 0-3 is.
    assert should_move(8, mine, [Coverage(4, 7, 50.0)], rng=random.Random(0)) is None
    # A balanced swarm: moving would not raise the weakest block by 20%.
    balanced = [Coverage(0, 3, 100.0), Coverage(4, 7, 100.0), Coverage(4, 7, 95.0)]
    assert should_move(8, mine, balanced, rng=random.Random(0)) is None
