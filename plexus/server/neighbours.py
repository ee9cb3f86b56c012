"""Round trips to the servers this one may forward to, published for topology-aware routes.

A server's output goes to a server holding the block right after its span. Every announce
period the server finds those servers in the DHT, pings their data planes (keeping the
connections warm for forwarding) and publishes the round trips in its record as
`extra.next_rtt_ms` (peer id -> milliseconds), so that clients can price server-to-server
legs (docs/protocol.md, Part 1, section 3.1; plexus.client.planner).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import trio

from plexus.client.pool import ConnectionPool
from plexus.errors import NetworkError
from plexus.p2p.dht import DHTNode
from plexus.p2p.records import ServerRecord

log = logging.getLogger(__name__)

MAX_NEIGHBOURS = 16  # round trips published per record (keeps records small)
PING_TIMEOUT_S = 2.0


def next_servers(records: list[ServerRecord], me: str, end: int) -> list[ServerRecord]:
    """Servers other than `me` that hold block `end + 1` (those this span feeds)."""
    return [r for r in records if r.peer_id != me and r.start <= end + 1 <= r.end]


async def measure(pool: ConnectionPool, servers: list[ServerRecord]) -> dict[str, float]:
    """Round trips in ms to up to MAX_NEIGHBOURS of `servers` (those that answer)."""
    chosen = servers if len(servers) <= MAX_NEIGHBOURS else random.sample(servers, MAX_NEIGHBOURS)
    found: dict[str, float] = {}

    async def one(record: ServerRecord) -> None:
        rtt = await pool.ping(record.peer_id, record.data_addr, timeout=PING_TIMEOUT_S)
        if rtt is not None:
            found[record.peer_id] = round(rtt * 1000, 3)

    async with trio.open_nursery() as nursery:
        for record in chosen:
            nursery.start_soon(one, record)
    return found


async def measure_forever(
    node: DHTNode,
    pool: ConnectionPool,
    model_id: str,
    span_end: Callable[[], int],
    into: dict[str, float],
    period: float,
) -> None:
    """Keep `into` equal to the latest round trips to the next servers."""
    await trio.sleep(min(2.0, period))
    while True:
        try:
            records = await node.find_servers(model_id)
            rtts = await measure(pool, next_servers(records, node.peer_id, span_end()))
        except NetworkError as exc:
            log.debug("could not measure next servers: %s", exc)
        else:
            into.clear()
            into.update(rtts)
        await trio.sleep(period)
