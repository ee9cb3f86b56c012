"""The path planner on synthetic swarms whose best route is known."""

from __future__ import annotations

import itertools
import random

import pytest

from plexus.client.planner import (
    HOP_COST_S,
    MissingBlocksError,
    ServerInfo,
    format_blocks,
    hop_cost,
    plan_route,
)


def server(name: str, start: int, end: int, tps: float = 100.0, **kw) -> ServerInfo:  # type: ignore[no-untyped-def]
    return ServerInfo(name, start, end, tps, **kw)


def spans(route) -> list[tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    return [(h.peer_id, h.start, h.end) for h in route.hops]


def test_single_server_covering_everything_is_one_hop() -> None:
    route = plan_route(8, [server("a", 0, 7), server("b", 0, 3), server("c", 4, 7)])
    assert spans(route) == [("a", 0, 7)]


def test_faster_servers_win_over_fewer_hops_when_much_faster() -> None:
    swarm = [server("slow", 0, 7, tps=10), server("b", 0, 3, tps=1000), server("c", 4, 7, 1000)]
    assert spans(plan_route(8, swarm, rtts={"b": 0.01, "c": 0.01})) == [("b", 0, 3), ("c", 4, 7)]


def test_latency_decides_between_equal_servers() -> None:
    swarm = [server("far", 0, 7), server("near", 0, 7)]
    assert spans(plan_route(8, swarm, rtts={"far": 0.2, "near": 0.01})) == [("near", 0, 7)]


def test_overlapping_spans_are_cut_where_the_next_server_starts() -> None:
    swarm = [server("a", 0, 5), server("b", 3, 7)]
    route = plan_route(8, swarm)
    assert spans(route) in ([("a", 0, 5), ("b", 6, 7)], [("a", 0, 2), ("b", 3, 7)])
    assert [b for h in route.hops for b in range(h.start, h.end + 1)] == list(range(8))


def test_excluded_loaded_and_distrusted_servers_are_avoided() -> None:
    swarm = [server("a", 0, 7), server("b", 0, 7, load=1.0), server("c", 0, 7, reputation=0.0)]
    assert spans(plan_route(8, swarm, exclude=["a"])) == [("b", 0, 7)]
    swarm = [server("busy", 0, 7, load=1.0), server("idle", 0, 7, load=0.0)]
    assert spans(plan_route(8, swarm)) == [("idle", 0, 7)]


def test_servers_without_free_cache_are_skipped() -> None:
    swarm = [server("full", 0, 7, free_cache_tokens=10), server("ok", 0, 7, tps=50)]
    assert spans(plan_route(8, swarm, cache_tokens_needed=100)) == [("ok", 0, 7)]


def test_missing_blocks_are_named() -> None:
    with pytest.raises(MissingBlocksError) as err:
        plan_route(10, [server("a", 0, 2), server("b", 5, 6)])
    assert err.value.missing == [3, 4, 7, 8, 9]
    assert "3-4, 7-9" in str(err.value)
    assert format_blocks([0, 1, 2, 5]) == "0-2, 5"


def test_sub_range_planning_for_failover() -> None:
    swarm = [server("a", 0, 7), server("b", 2, 5)]
    route = plan_route(8, swarm, start=3, end=5, exclude=["a"])
    assert spans(route) == [("b", 3, 5)]


def brute_force(num_blocks: int, swarm: list[ServerInfo], rtts: dict[str, float]) -> float:
    """Cheapest cost over every way of cutting 0..n into hops (small swarms only)."""
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=num_blocks - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [num_blocks]
        total = 0.0
        for a, b in itertools.pairwise(bounds):
            options = [
                hop_cost(s, b - a, rtts.get(s.peer_id, 0.05))
                for s in swarm
                if s.start <= a and b - 1 <= s.end
            ]
            if not options:
                total = float("inf")
                break
            total += min(options)
        best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(30))
def test_matches_brute_force_on_random_swarms(seed: int) -> None:
    rng = random.Random(seed)
    n = 7
    swarm = []
    for i in range(rng.randint(3, 7)):
        a = rng.randint(0, n - 1)
        b = rng.randint(a, n - 1)
        swarm.append(server(f"s{i}", a, b, tps=rng.uniform(5, 500), load=rng.random() * 0.5))
    swarm.append(server("full", 0, n - 1, tps=rng.uniform(1, 50)))
    rtts = {s.peer_id: rng.uniform(0.001, 0.1) for s in swarm}
    route = plan_route(n, swarm, rtts=rtts)
    assert route.cost == pytest.approx(brute_force(n, swarm, rtts), rel=1e-9)
    assert route.cost >= HOP_COST_S
