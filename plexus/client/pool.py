"""One authenticated data-plane connection per server, opened on first use.

Each connection is owned by a task in the pool's nursery; it stays open until the pool
closes or the connection breaks, after which the next `get` dials again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from plexus.errors import NetworkError
from plexus.identity import Identity
from plexus.p2p.dataplane import Connection, Limits, connect

log = logging.getLogger(__name__)

SLOW_DIAL_S = 1.0  # a dial (handshake included) that took longer is logged


class ConnectionPool:
    def __init__(
        self, identity: Identity, nursery: trio.Nursery, limits: Limits | None = None
    ) -> None:
        self.identity = identity
        self.limits = limits
        self._nursery = nursery
        self._connections: dict[str, Connection] = {}
        self._locks: dict[str, trio.Lock] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls, identity: Identity, limits: Limits | None = None
    ) -> AsyncIterator[ConnectionPool]:
        async with trio.open_nursery() as nursery:
            pool = cls(identity, nursery, limits)
            try:
                yield pool
            finally:
                nursery.cancel_scope.cancel()

    def connected(self, peer_id: str) -> bool:
        """Whether a connection to `peer_id` is open (`get` would not dial)."""
        return self._open_connection(peer_id) is not None

    def _open_connection(self, peer_id: str) -> Connection | None:
        conn = self._connections.get(peer_id)
        return conn if conn is not None and not conn.closed else None

    async def get(self, peer_id: str, address: str) -> Connection:
        """The open connection to `peer_id` at `address`, dialing it if needed."""
        conn = self._open_connection(peer_id)
        if conn is not None:
            return conn  # the common case: no lock, no scheduler pass
        async with self._locks.setdefault(peer_id, trio.Lock()):
            conn = self._open_connection(peer_id)
            if conn is not None:
                return conn
            began = trio.current_time()
            try:
                return await self._nursery.start(self._hold, peer_id, address)
            except NetworkError as exc:
                raise NetworkError(f"cannot connect to {peer_id} at {address}: {exc}") from exc
            except (OSError, ValueError) as exc:
                raise NetworkError(f"cannot connect to {peer_id} at {address}: {exc}") from exc
            finally:
                if (took := trio.current_time() - began) > SLOW_DIAL_S:
                    log.info("dialling %s at %s took %.1f s", peer_id, address, took)

    async def _hold(
        self, peer_id: str, address: str, task_status: trio.TaskStatus[Connection]
    ) -> None:
        started = False
        try:
            async with connect(self.identity, address, peer_id, limits=self.limits) as conn:
                self._connections[peer_id] = conn
                task_status.started(conn)
                started = True
                try:
                    await conn.wait_closed()
                finally:
                    if self._connections.get(peer_id) is conn:
                        del self._connections[peer_id]
        except NetworkError as exc:
            if not started:
                raise
            log.debug("connection to %s ended: %s", peer_id, exc)

    async def drop(self, peer_id: str) -> None:
        """Close the connection to `peer_id` (after a failure), if any."""
        conn = self._connections.pop(peer_id, None)
        if conn is not None:
            await conn.aclose("dropped by client")

    async def ping(self, peer_id: str, address: str, timeout: float = 2.0) -> float | None:
        """Round-trip time to a server in seconds, or None if it does not answer."""
        with trio.move_on_after(timeout):
            try:
                conn = await self.get(peer_id, address)
                return await conn.ping(timeout)
            except NetworkError:
                return None
        return None
