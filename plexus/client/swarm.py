"""The client's view of the swarm: live servers of one model, their round trips, and
servers in back-off after failing."""

from __future__ import annotations

import logging
import math
import time

import trio

from plexus.client.planner import ServerInfo
from plexus.client.pool import ConnectionPool
from plexus.p2p.dht import DHTNode
from plexus.p2p.records import ServerRecord

log = logging.getLogger(__name__)

BACKOFF_S = 60.0  # first back-off after a failure; doubles on each repeat
MAX_BACKOFF_S = 900.0
REFRESH_S = 15.0  # re-read the DHT at most this often unless forced


def server_info(record: ServerRecord, reputation: float = 1.0) -> ServerInfo:
    extra = record.extra or {}
    sessions, max_sessions = extra.get("sessions"), extra.get("max_sessions")
    load = 0.0
    if isinstance(sessions, int) and isinstance(max_sessions, int) and max_sessions > 0:
        load = min(1.0, sessions / max_sessions)
    return ServerInfo(
        peer_id=record.peer_id,
        start=record.start,
        end=record.end,
        throughput=record.throughput,
        free_cache_tokens=record.free_cache_tokens,
        load=load,
        address=record.data_addr,
        reputation=reputation,
        next_rtts=_next_rtts(extra.get("next_rtt_ms")),
    )


def _next_rtts(published: object) -> dict[str, float]:
    """A record's `next_rtt_ms` (peer id -> ms) in seconds; bad entries are ignored."""
    if not isinstance(published, dict):
        return {}
    return {
        peer: float(ms) / 1000
        for peer, ms in list(published.items())[:64]
        if isinstance(peer, str)
        and isinstance(ms, int | float)
        and not isinstance(ms, bool)
        and math.isfinite(ms)
        and 0 <= ms < 600_000
    }


class SwarmView:
    def __init__(self, node: DHTNode, pool: ConnectionPool, model_id: str) -> None:
        self.node = node
        self.pool = pool
        self.model_id = model_id
        self.servers: dict[str, ServerInfo] = {}
        self.rtts: dict[str, float] = {}
        self._backoff: dict[str, tuple[float, float]] = {}  # peer -> (until, last length)
        self._refreshed = 0.0
        self.reputation: dict[str, float] = {}
        self.blocked: set[str] = set()  # servers the user never wants to use

    async def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._refreshed < REFRESH_S and self.servers:
            return
        records = await self.node.find_servers(self.model_id)
        self.servers = {
            r.peer_id: server_info(r, self.reputation.get(r.peer_id, 1.0)) for r in records
        }
        self._refreshed = time.monotonic()
        unmeasured = [s for s in self.servers.values() if s.peer_id not in self.rtts]
        async with trio.open_nursery() as nursery:
            for s in unmeasured:
                nursery.start_soon(self._measure, s)

    async def _measure(self, server: ServerInfo) -> None:
        rtt = await self.pool.ping(server.peer_id, server.address)
        if rtt is not None:
            self.rtts[server.peer_id] = rtt

    def fail(self, peer_id: str) -> None:
        """Back off from a server that failed: 60 s, doubling on repeated failures."""
        _, previous = self._backoff.get(peer_id, (0.0, BACKOFF_S / 2))
        length = min(MAX_BACKOFF_S, previous * 2)
        self._backoff[peer_id] = (time.monotonic() + length, length)
        self.rtts.pop(peer_id, None)
        log.info("backing off from %s for %.0f s", peer_id, length)

    def backed_off(self) -> set[str]:
        now = time.monotonic()
        return self.blocked | {p for p, (until, _) in self._backoff.items() if until > now}
