"""The data-plane listener: accept, authenticate, then one reader task per connection."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from plexus.identity import Identity
from plexus.p2p.dataplane.connection import Connection, Handler
from plexus.p2p.dataplane.errors import ConnectionClosed, HandshakeError
from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.stream import SocketByteStream

log = logging.getLogger(__name__)

_ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_SLEEP = 0.1


@dataclass
class DataplaneServer:
    """A running listener, as handed back by `nursery.start(serve_dataplane, ...)`."""

    identity: Identity
    limits: Limits
    addresses: list[tuple[str, int]]
    connections: set[Connection] = field(default_factory=set)
    on_disconnect: Callable[[str], None] | None = None
    """Called with a peer id when that peer's last connection has closed."""
    sockets_open: int = 0
    """TCP connections held, including those still in the handshake."""
    handshakes_failed: int = 0

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id_str

    @property
    def port(self) -> int:
        return self.addresses[0][1]


async def serve_dataplane(
    identity: Identity,
    host: str,
    port: int,
    handler: Handler,
    *,
    limits: Limits | None = None,
    on_disconnect: Callable[[str], None] | None = None,
    task_status: trio.TaskStatus[DataplaneServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handler` on `host:port` (port 0: any free port) until cancelled.

    Use `server = await nursery.start(serve_dataplane, identity, "127.0.0.1", 0, handler)`
    to learn the bound address. Malformed input, failing handlers and misbehaving peers
    cost only their own connection, never the server.
    """
    limits = limits or Limits()
    listeners = await trio.open_tcp_listeners(port, host=host)
    addresses = [listener.socket.getsockname()[:2] for listener in listeners]
    server = DataplaneServer(identity, limits, addresses, on_disconnect=on_disconnect)
    log.info("data plane of %s listening on %s", identity.peer_id_str, addresses)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, server, listener, handler, nursery)
        task_status.started(server)


async def _accept_loop(
    server: DataplaneServer,
    listener: trio.SocketListener,
    handler: Handler,
    nursery: trio.Nursery,
) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY_ERRNOS:
                    raise
                log.warning("accept failed (%s); retrying", exc)
                await trio.sleep(_ACCEPT_RETRY_SLEEP)
                continue
            if server.sockets_open >= server.limits.max_connections:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                continue
            server.sockets_open += 1
            nursery.start_soon(_serve_connection, server, stream, handler)


async def _serve_connection(
    server: DataplaneServer, tcp: trio.SocketStream, handler: Handler
) -> None:
    stream = SocketByteStream(tcp)
    connection: Connection | None = None
    try:
        try:
            with trio.fail_after(server.limits.handshake_timeout):
                connection = await Connection.open_server(
                    stream, server.identity, server.limits, handler
                )
        except (HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
            server.handshakes_failed += 1
            log.debug("handshake failed: %r", exc)
            return
        server.connections.add(connection)
        await connection.run()
    except Exception:  # a bug in one connection must not take the server down
        log.exception("connection from %s failed", connection.peer_id if connection else "?")
    finally:
        if connection is not None:
            server.connections.discard(connection)
            peer = connection.peer_id
            still_connected = any(c.peer_id == peer for c in server.connections)
            if server.on_disconnect is not None and not still_connected:
                try:
                    server.on_disconnect(peer)
                except Exception:  # a failing callback must not take the server down
                    log.exception("on_disconnect callback failed for %s", peer)
        server.sockets_open -= 1
        with trio.CancelScope(shield=True):
            await stream.aclose()
