"""The frontier pre-filter changes nothing `plan_route` decides: same cost, same route."""

from __future__ import annotations

import math
import random

import pytest

from plexus.client.planner import MissingBlocksError, ServerInfo, plan_route
from simulations.frontier import frontier, usable


def swarm(rng: random.Random, n: int, blocks: int) -> tuple[list[ServerInfo], dict[str, float]]:
    servers, rtts = [], {}
    for i in range(n):
        length = rng.randint(1, blocks // 2)
        start = rng.randint(0, blocks - length)
        name = f"s{i}"
        servers.append(
            ServerInfo(
                name,
                start,
                start + length - 1,
                float(rng.choice([12, 90, 130, 280, 550, 900])),
                free_cache_tokens=rng.choice([0, 4096, 1 << 20]),
                load=rng.random(),
                reputation=rng.choice([0.0, 0.5, 0.75, 1.0]),
            )
        )
        rtts[name] = rng.choice([0.025, 0.065, 0.085, 0.17]) + rng.choice([0.0, 0.005, 0.04])
    return servers, rtts


@pytest.mark.parametrize("seed", range(40))
def test_plan_on_frontier_equals_plan_on_everyone(seed: int) -> None:
    rng = random.Random(seed)
    blocks = rng.choice([8, 24, 80])
    servers, rtts = swarm(rng, rng.choice([20, 200, 600]), blocks)
    start = rng.randint(0, blocks - 1)
    end = rng.randint(start, blocks - 1)
    exclude = {s.peer_id for s in rng.sample(servers, 5)}
    kwargs = {"start": start, "end": end, "rtts": rtts, "exclude": exclude}
    front = frontier(blocks, usable(servers, exclude, 2048), rtts, start=start, end=end)
    assert len(front) <= len(servers)
    try:
        full = plan_route(blocks, servers, cache_tokens_needed=2048, **kwargs)
    except MissingBlocksError as exc:
        with pytest.raises(MissingBlocksError) as again:
            plan_route(blocks, front, cache_tokens_needed=2048, **kwargs)
        assert again.value.missing == exc.missing
        return
    fast = plan_route(blocks, front, cache_tokens_needed=2048, **kwargs)
    assert math.isclose(fast.cost, full.cost, rel_tol=1e-12)
    assert fast.describe() == full.describe()


def test_dominated_servers_are_dropped() -> None:
    big = ServerInfo("big", 0, 9, 500.0)
    small = ServerInfo("small", 2, 5, 100.0)
    far = ServerInfo("far", 0, 9, 900.0)
    rtts = {"big": 0.02, "small": 0.05, "far": 0.2}
    assert [s.peer_id for s in frontier(10, [small, big, far], rtts)] == ["far", "big"]
