"""An exact speed-up for `plan_route` on large swarms: drop servers that can never matter.

Server B is *dominated* by server A when A's span contains B's, A's round trip is no
longer and A's per-block cost (`hop_cost(s, 1, 0)`: throughput, load and reputation) is no
higher. Any route through B can then use A for the same blocks at no higher cost, and since
hop costs are affine in the number of blocks, moving each hand-over to an end of its range
(a span start or end that is still a stop) never costs more either. So `plan_route` over the
undominated servers (the *frontier*) finds a route of exactly the same cost; the route itself
can differ only between routes of equal cost. `tests/simulations/test_frontier.py` checks
this against `plan_route` on the full list.

The filters `plan_route` applies first (exclusions, free cache, minimum reputation) are
applied here too, with the same predicates, before dominance is computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from plexus.client.planner import DEFAULT_RTT_S, MIN_REPUTATION, ServerInfo, hop_cost


def usable(
    servers: Iterable[ServerInfo], exclude: Iterable[str] = (), cache_tokens_needed: int = 0
) -> list[ServerInfo]:
    """The servers `plan_route` itself would consider for the whole model."""
    banned = set(exclude)
    return [
        s
        for s in servers
        if s.peer_id not in banned
        and s.free_cache_tokens >= cache_tokens_needed
        and s.reputation >= MIN_REPUTATION
    ]


def block_cost(server: ServerInfo) -> float:
    """What one more block costs on this server, as `plan_route` prices it (plus a constant)."""
    return hop_cost(server, 1, 0.0)


def frontier(
    num_blocks: int,
    servers: Sequence[ServerInfo],
    rtts: Mapping[str, float],
    *,
    start: int = 0,
    end: int | None = None,
    per_block: Mapping[str, float] | None = None,
) -> list[ServerInfo]:
    """The servers that no other one dominates for blocks start..end (spans are compared
    clipped to that range, as `plan_route` sees them; ties keep the first in cost order).

    `per_block` may hold `block_cost(s)` of every server, computed once for many calls."""
    end = num_blocks - 1 if end is None else end
    keyed = []
    for index, s in enumerate(servers):
        if s.start > end or s.end < start:
            continue
        rtt = rtts.get(s.peer_id, DEFAULT_RTT_S)
        cost = per_block[s.peer_id] if per_block is not None else block_cost(s)
        lo, hi = max(start, s.start), min(end, s.end)
        keyed.append((cost, rtt, lo - hi, index, lo - start, hi - start))
    keyed.sort()  # the index is unique, so nothing after it is ever compared
    # best[i, j]: the shortest round trip among kept servers whose span contains i..j.
    size = end - start + 1
    best = np.full((size, size), np.inf)
    kept: list[ServerInfo] = []
    for _, rtt, _, index, lo, hi in keyed:
        if best[lo, hi] <= rtt:
            continue
        kept.append(servers[index])
        window = best[lo : hi + 1, lo : hi + 1]
        np.minimum(window, rtt, out=window)
    return kept
