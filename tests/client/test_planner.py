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
    server_rtt,
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


# -- forwarding: servers pass hidden states to each other --------------------------------


def chain_cost(route, rtts: dict[str, float]) -> float:  # type: ignore[no-untyped-def]
    """The forwarding cost of a route, recomputed from its hops."""
    hops = route.hops
    total = rtts.get(hops[0].peer_id, 0.05) / 2 + rtts.get(hops[-1].peer_id, 0.05) / 2
    for a, b in itertools.pairwise(hops):
        total += server_rtt(a.server, b.server, rtts) / 2
    return total + sum(hop_cost(h.server, h.end - h.start + 1, 0.0) for h in hops)


def brute_force_chain(n: int, swarm: list[ServerInfo], rtts: dict[str, float]) -> float:
    """Cheapest forwarding cost over every cut of 0..n and every server per piece."""
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        pieces = list(itertools.pairwise(bounds))
        options = [[s for s in swarm if s.start <= a and b - 1 <= s.end] for a, b in pieces]
        for choice in itertools.product(*options):
            if any(x is y for x, y in itertools.pairwise(choice)):
                continue  # one server never takes two consecutive hops
            total = rtts.get(choice[0].peer_id, 0.05) / 2 + rtts.get(choice[-1].peer_id, 0.05) / 2
            total += sum(server_rtt(x, y, rtts) / 2 for x, y in itertools.pairwise(choice))
            total += sum(hop_cost(s, b - a, 0.0) for s, (a, b) in zip(choice, pieces, strict=True))
            best = min(best, total)
    return best


def two_clusters(near_tps: float) -> tuple[list[ServerInfo], dict[str, float]]:
    """Near servers 10 ms from the client and 2 ms from each other; far ones 150 ms away
    and 2 ms from each other; 150 ms between the clusters. The far ones are faster."""
    near, far = {"n1", "n2", "n3"}, {"f1", "f2", "f3"}

    def rtts_of(me: str) -> dict[str, float]:
        same = near if me in near else far
        return {p: (0.002 if p in same else 0.150) for p in near | far if p != me}

    spans_ = {"1": (0, 2), "2": (3, 5), "3": (6, 7)}
    swarm = [
        server(p, *spans_[p[1]], tps=near_tps if p in near else 200.0, next_rtts=rtts_of(p))
        for p in sorted(near | far)
    ]
    return swarm, {**{p: 0.010 for p in near}, **{p: 0.150 for p in far}}


def test_forwarding_routes_stay_in_the_near_cluster_when_it_is_fast_enough() -> None:
    swarm, rtts = two_clusters(near_tps=150.0)
    rng = random.Random(0)
    for _ in range(20):
        shuffled = swarm[:]
        rng.shuffle(shuffled)
        route = plan_route(8, shuffled, rtts=rtts, forwarding=True)
        assert [h.peer_id for h in route.hops] == ["n1", "n2", "n3"]
        assert route.cost == pytest.approx(chain_cost(route, rtts))
    # When the near cluster is far too slow, the far one is worth its latency.
    swarm, rtts = two_clusters(near_tps=2.0)
    route = plan_route(8, swarm, rtts=rtts, forwarding=True)
    assert [h.peer_id for h in route.hops] == ["f1", "f2", "f3"]


def test_server_to_server_latency_decides_between_equal_servers() -> None:
    # Every server is 20 ms from the client, but only x1 -> x2 is a short leg.
    legs = {"x1": {"x2": 0.002, "y2": 0.200}, "y1": {"x2": 0.200, "y2": 0.200}}
    swarm = [
        server(p, *((0, 3) if p.endswith("1") else (4, 7)), next_rtts=legs.get(p, {}))
        for p in ("y1", "x1", "y2", "x2")
    ]
    rtts = dict.fromkeys(("x1", "y1", "x2", "y2"), 0.020)
    route = plan_route(8, swarm, rtts=rtts, forwarding=True)
    assert [h.peer_id for h in route.hops] == ["x1", "x2"]
    # Without a published leg, the estimate comes from the client's own round trips.
    a, b = server("a", 0, 3), server("b", 4, 7)
    assert server_rtt(a, b, {"a": 0.01, "b": 0.03}) == pytest.approx(0.02)
    assert server_rtt(a, b, {}) == 0.05


@pytest.mark.parametrize("seed", range(25))
def test_forwarding_matches_brute_force_on_random_swarms(seed: int) -> None:
    rng = random.Random(seed)
    n = 6
    swarm = []
    for i in range(rng.randint(3, 6)):
        a = rng.randint(0, n - 1)
        b = rng.randint(a, n - 1)
        swarm.append(server(f"s{i}", a, b, tps=rng.uniform(5, 500), load=rng.random() * 0.5))
    swarm.append(server("full", 0, n - 1, tps=rng.uniform(1, 50)))
    names = [s.peer_id for s in swarm]
    published = {
        p: {q: rng.uniform(0.001, 0.2) for q in names if q != p and rng.random() < 0.6}
        for p in names
    }
    swarm = [ServerInfo(**{**s.__dict__, "next_rtts": published[s.peer_id]}) for s in swarm]
    rtts = {p: rng.uniform(0.001, 0.1) for p in names if rng.random() < 0.8}
    route = plan_route(n, swarm, rtts=rtts, forwarding=True)
    assert route.cost == pytest.approx(brute_force_chain(n, swarm, rtts), rel=1e-9)
    assert route.cost == pytest.approx(chain_cost(route, rtts), rel=1e-9)
    assert [b for h in route.hops for b in range(h.start, h.end + 1)] == list(range(n))
