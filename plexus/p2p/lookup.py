"""Iterative Kademlia lookup that asks the peers closest to a key, closest first, and stops
as soon as enough of them have answered.

Read-only: it never consults or fills py-libp2p's local value/provider caches (sharp edge
5 in docs/protocol.md, Part 1), so answers are as fresh as the network's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.routing_table import RoutingTable
from libp2p.kad_dht.utils import sort_peer_ids_by_distance
from libp2p.peer.id import ID

from plexus.p2p.kad_rpc import PeerUnreachable

log = logging.getLogger(__name__)

T = TypeVar("T")

Query = Callable[[ID], Awaitable[tuple[T | None, list[ID]]]]


@dataclass
class LookupResult(Generic[T]):
    answers: list[tuple[ID, T]] = field(default_factory=list)
    queried: int = 0
    unreachable: list[ID] = field(default_factory=list)


async def iterative_lookup(
    host: IHost,
    routing_table: RoutingTable,
    key: bytes,
    query: Query[T],
    *,
    want: int,
    alpha: int = 3,
    max_queries: int = 20,
    enough: Callable[[list[T]], bool] | None = None,
) -> LookupResult[T]:
    """Query peers closest to `key`, following the closer peers they return, until `want`
    of them gave a non-None answer (and `enough(answers)` holds, when given), `max_queries`
    were asked, or no candidate is left. Up to `alpha` queries are in flight; a new one
    starts as soon as any finishes, so one peer that never answers holds one slot, not
    the whole lookup. `query` must bound its own time; unreachable peers are skipped
    (and listed in the result)."""
    own = host.get_id()
    seeds = routing_table.find_local_closest_peers(key, max_queries)
    if len(seeds) < alpha:
        seeds += [p for p in host.get_connected_peers() if p not in seeds]
    candidates: list[ID] = sort_peer_ids_by_distance(key, [p for p in seeds if p != own])
    asked: set[ID] = set()
    result: LookupResult[T] = LookupResult()

    def satisfied() -> bool:
        if len(result.answers) < want:
            return False
        return enough is None or enough([answer for _, answer in result.answers])

    async def ask(peer: ID) -> None:
        try:
            answer, closer = await query(peer)
        except PeerUnreachable as exc:
            log.debug("lookup: %s", exc)
            result.unreachable.append(peer)
        else:
            if answer is not None:
                result.answers.append((peer, answer))
            for p in closer:
                if p != own and p not in asked and p not in candidates:
                    candidates.append(p)
            candidates[:] = sort_peer_ids_by_distance(key, candidates)
        finally:
            done.send_nowait(None)  # never blocks: the buffer holds one per query in flight

    done, finished = trio.open_memory_channel[None](alpha)
    in_flight = 0
    async with trio.open_nursery() as nursery:
        while not satisfied():
            room = min(alpha - in_flight, max_queries - result.queried)
            batch = [p for p in candidates if p not in asked][:room]
            for peer in batch:
                asked.add(peer)
                result.queried += 1
                in_flight += 1
                nursery.start_soon(ask, peer)
            if in_flight == 0:
                break
            await finished.receive()
            in_flight -= 1
        nursery.cancel_scope.cancel()  # answers still in flight are no longer needed
    return result
