"""Clients' views of the swarm and route planning with the real `plan_route`.

A view is what a client reads from the DHT: one `ServerInfo` per announced server, with the
load and reputation it had when the view was taken. Views are rebuilt every
`view_refresh_s` (servers that left meanwhile stay in them, as records outlive their
servers until the TTL); convicted servers are excluded from plans at once by the caller.
Round trips depend on the client's region, so each region has its own round-trip table and
its own plans.

`plan_route` is a pure function, so calls with identical arguments are answered from a
cache; and it runs on the undominated servers only (`simulations.frontier`), which finds
a route of exactly the same cost as the full list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from plexus.client.planner import MissingBlocksError, Route, ServerInfo, plan_route
from simulations.frontier import block_cost, frontier, usable
from simulations.network import REGIONS, region_rtt
from simulations.peers import Peer

PlanKey = tuple[int, int, frozenset[str]]


@dataclass
class View:
    built_at: float
    servers: list[ServerInfo]
    by_name: dict[str, ServerInfo]
    rtts: dict[str, dict[str, float]]
    per_block: dict[str, float]
    plans: dict[str, dict[PlanKey, Route | list[int]]] = field(default_factory=dict)
    _holders: dict[tuple[int, int], list[str]] = field(default_factory=dict)

    def holders(self, start: int, end: int) -> list[str]:
        """Servers in the view whose span contains start..end."""
        found = self._holders.get((start, end))
        if found is None:
            found = [s.peer_id for s in self.servers if s.start <= start and end <= s.end]
            self._holders[(start, end)] = found
        return found


class Router:
    def __init__(
        self,
        num_blocks: int,
        cache_tokens: int,
        refresh_s: float,
        weight: Callable[[Peer], float],
    ) -> None:
        self.num_blocks = num_blocks
        self.cache_tokens = cache_tokens
        self.refresh_s = refresh_s
        self.weight = weight
        self.view: View | None = None
        self.plans_computed = 0
        self.plans_cached = 0

    def invalidate(self) -> None:
        self.view = None

    def current(self, now: float, peers: Iterable[Peer]) -> View:
        if self.view is None or now - self.view.built_at >= self.refresh_s:
            self.view = self._build(now, peers)
        return self.view

    def _build(self, now: float, peers: Iterable[Peer]) -> View:
        servers: list[ServerInfo] = []
        rtts: dict[str, dict[str, float]] = {r: {} for r in REGIONS}
        for p in peers:
            if not p.online or p.span is None:
                continue
            free = (p.device.max_sessions - len(p.sessions)) * self.cache_tokens
            servers.append(
                ServerInfo(
                    peer_id=p.name,
                    start=p.span[0],
                    end=p.span[1],
                    throughput=float(p.announced_throughput),
                    free_cache_tokens=max(0, free),
                    load=p.load,
                    reputation=self.weight(p),
                )
            )
            for region, table in rtts.items():
                table[p.name] = region_rtt(region, p.region) + p.last_mile_s
        per_block = {s.peer_id: block_cost(s) for s in servers}
        return View(now, servers, {s.peer_id: s for s in servers}, rtts, per_block)

    def plan(self, view: View, region: str, start: int, end: int, exclude: set[str]) -> Route:
        """The route `plan_route` picks; raises `MissingBlocksError` like it does."""
        key: PlanKey = (start, end, frozenset(e for e in exclude if e in view.by_name))
        cache = view.plans.setdefault(region, {})
        hit = cache.get(key)
        if hit is not None:
            self.plans_cached += 1
            if isinstance(hit, Route):
                return hit
            raise MissingBlocksError(hit)
        self.plans_computed += 1
        candidates = usable(view.servers, key[2], self.cache_tokens)
        rtts = view.rtts[region]
        front = frontier(
            self.num_blocks, candidates, rtts, start=start, end=end, per_block=view.per_block
        )
        try:
            route = plan_route(
                self.num_blocks,
                front,
                start=start,
                end=end,
                rtts=rtts,
                exclude=key[2],
                cache_tokens_needed=self.cache_tokens,
            )
        except MissingBlocksError as exc:
            cache[key] = list(exc.missing)
            raise
        cache[key] = route
        return route
