"""Choosing the chain of servers for a session: a pure function of the swarm's state.

The route is the cheapest path from block 0 to block n over "hops", where a hop runs
blocks i..j-1 on one server that holds them. A hop costs its compute time for those
blocks (scaled up by its load and down by its reputation) plus a small constant so that
fewer hops win when costs tie, and the network:

* client relay (`forwarding=False`): the round trip from the client to every server;
* forwarding (`forwarding=True`): one way from the client to the first server, one way
  between consecutive servers (from the round trips servers publish, `next_rtts`), and
  one way from the last server back, so routes keep to servers that are close to each
  other.

Servers that failed recently, lack free cache, or are known cheaters are left out.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from plexus.errors import PlexusError

DEFAULT_RTT_S = 0.05  # assumed round trip to a server never measured
HOP_COST_S = 1e-4  # breaks ties in favour of fewer hops
MIN_REPUTATION = 0.05  # below this a server is not used at all


class MissingBlocksError(PlexusError):
    """No server (that we may use) holds some blocks of the model."""

    def __init__(self, missing: list[int]) -> None:
        self.missing = missing
        super().__init__(f"no available server holds blocks {format_blocks(missing)}")


@dataclass(frozen=True)
class ServerInfo:
    """What the planner knows of one server."""

    peer_id: str
    start: int  # inclusive
    end: int  # inclusive
    throughput: float  # tokens/s per block
    free_cache_tokens: int = 1 << 30
    load: float = 0.0  # 0 idle .. 1 saturated (sessions / max sessions)
    address: str = ""
    reputation: float = 1.0  # 0..1 from the ledger; 1 for unknown-but-unpunished
    next_rtts: Mapping[str, float] = field(default_factory=dict)  # to servers it may feed


@dataclass(frozen=True)
class Hop:
    server: ServerInfo
    start: int  # inclusive, global block index
    end: int  # inclusive

    @property
    def peer_id(self) -> str:
        return self.server.peer_id


@dataclass(frozen=True)
class Route:
    hops: tuple[Hop, ...]
    cost: float

    def describe(self) -> list[dict[str, object]]:
        return [{"peer_id": h.peer_id, "start": h.start, "end": h.end} for h in self.hops]


def format_blocks(blocks: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts: list[str] = []
    for b in sorted(blocks):
        if parts and int(parts[-1].split("-")[-1]) == b - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{b}"
        else:
            parts.append(str(b))
    return ", ".join(parts)


def hop_cost(server: ServerInfo, blocks: int, rtt: float) -> float:
    compute = blocks / max(server.throughput, 1e-9)
    compute *= 1.0 + 2.0 * min(max(server.load, 0.0), 1.0)
    compute /= max(server.reputation, MIN_REPUTATION)
    return rtt + compute + HOP_COST_S


def plan_route(
    num_blocks: int,
    servers: Iterable[ServerInfo],
    *,
    start: int = 0,
    end: int | None = None,
    rtts: Mapping[str, float] | None = None,
    exclude: Iterable[str] = (),
    cache_tokens_needed: int = 0,
    forwarding: bool = False,
) -> Route:
    """The cheapest chain covering blocks start..end (default: the whole model)."""
    end = num_blocks - 1 if end is None else end
    rtts = rtts or {}
    banned = set(exclude)
    usable = [
        s
        for s in servers
        if s.peer_id not in banned
        and s.free_cache_tokens >= cache_tokens_needed
        and s.reputation >= MIN_REPUTATION
        and s.start <= end
        and s.end >= start
    ]
    goal = end + 1
    # Boundaries worth stopping at: span ends and span starts inside the range.
    stops = sorted(
        {goal}
        | {min(s.end + 1, goal) for s in usable}
        | {s.start for s in usable if s.start > start}
    )
    if forwarding:
        return _plan_chain(usable, stops, start, goal, rtts)
    best: dict[int, float] = {start: 0.0}
    back: dict[int, Hop] = {}
    queue: list[tuple[float, int]] = [(0.0, start)]
    while queue:
        cost, at = heapq.heappop(queue)
        if at == goal:
            break
        if cost > best.get(at, float("inf")):
            continue
        for s in usable:
            if not s.start <= at <= s.end:
                continue
            rtt = rtts.get(s.peer_id, DEFAULT_RTT_S)
            limit = min(s.end + 1, goal)
            for stop in stops:
                if at < stop <= limit:
                    new = cost + hop_cost(s, stop - at, rtt)
                    if new < best.get(stop, float("inf")) - 1e-12:
                        best[stop] = new
                        back[stop] = Hop(s, at, stop - 1)
                        heapq.heappush(queue, (new, stop))
    if goal not in best:
        covered = {b for s in usable for b in range(s.start, s.end + 1)}
        raise MissingBlocksError([b for b in range(start, goal) if b not in covered] or [goal - 1])
    hops: list[Hop] = []
    at = goal
    while at != start:
        hop = back[at]
        hops.append(hop)
        at = hop.start
    return Route(tuple(reversed(hops)), best[goal])


def server_rtt(a: ServerInfo, b: ServerInfo, rtts: Mapping[str, float]) -> float:
    """Round trip between two servers: what `a` published, else what `b` did, else an
    estimate from the client's own round trips to both (or the default)."""
    rtt = a.next_rtts.get(b.peer_id)
    if rtt is None:
        rtt = b.next_rtts.get(a.peer_id)
    if rtt is None:
        if a.peer_id in rtts and b.peer_id in rtts:
            return (rtts[a.peer_id] + rtts[b.peer_id]) / 2
        return DEFAULT_RTT_S
    return rtt


def _plan_chain(
    usable: list[ServerInfo],
    stops: list[int],
    start: int,
    goal: int,
    rtts: Mapping[str, float],
) -> Route:
    """Cheapest route when servers forward to each other: Dijkstra over (block, server
    that ran the blocks before it), since a leg's cost depends on both its ends."""

    def client_leg(s: ServerInfo) -> float:
        return rtts.get(s.peer_id, DEFAULT_RTT_S) / 2

    def hop(s: ServerInfo, blocks: int) -> float:
        return hop_cost(s, blocks, 0.0)

    best: dict[tuple[int, int], float] = {}
    back: dict[tuple[int, int], tuple[tuple[int, int] | None, Hop]] = {}
    queue: list[tuple[float, int, int]] = []  # (cost, block, index of the last server)

    def relax(state: tuple[int, int], cost: float, came: tuple[int, int] | None, h: Hop) -> None:
        if state[0] == goal:
            cost += client_leg(h.server)  # the way back to the client
        if cost < best.get(state, float("inf")) - 1e-12:
            best[state] = cost
            back[state] = (came, h)
            heapq.heappush(queue, (cost, *state))

    for i, s in enumerate(usable):
        if s.start <= start <= s.end:
            for stop in stops:
                if start < stop <= min(s.end + 1, goal):
                    relax(
                        (stop, i),
                        client_leg(s) + hop(s, stop - start),
                        None,
                        Hop(s, start, stop - 1),
                    )
    done: tuple[int, int] | None = None
    while queue:
        cost, at, last = heapq.heappop(queue)
        if cost > best.get((at, last), float("inf")):
            continue
        if at == goal:
            done = (at, last)
            break
        prev = usable[last]
        for i, s in enumerate(usable):
            if i == last or not s.start <= at <= s.end:
                continue
            leg = server_rtt(prev, s, rtts) / 2
            for stop in stops:
                if at < stop <= min(s.end + 1, goal):
                    relax(
                        (stop, i), cost + leg + hop(s, stop - at), (at, last), Hop(s, at, stop - 1)
                    )
    if done is None:
        covered = {b for s in usable for b in range(s.start, s.end + 1)}
        raise MissingBlocksError([b for b in range(start, goal) if b not in covered] or [goal - 1])
    hops: list[Hop] = []
    state: tuple[int, int] | None = done
    while state is not None:
        came, h = back[state]
        hops.append(h)
        state = came
    return Route(tuple(reversed(hops)), best[done])
