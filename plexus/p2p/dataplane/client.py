"""Dialing a data-plane server: `async with connect(...) as conn: await conn.request(...)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from plexus.identity import Identity
from plexus.p2p.dataplane.connection import Connection, Handler
from plexus.p2p.dataplane.errors import ConnectionClosed, HandshakeError
from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.stream import SocketByteStream

Address = tuple[str, int] | str


def parse_address(address: Address) -> tuple[str, int]:
    """("host", port) from a tuple or a "host:port" / "[v6]:port" string."""
    if isinstance(address, tuple):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be host:port, not {address!r}")
    return host.strip("[]"), int(port)


@asynccontextmanager
async def connect(
    identity: Identity,
    address: Address,
    expected_peer_id: str,
    *,
    limits: Limits | None = None,
    handler: Handler | None = None,
) -> AsyncIterator[Connection]:
    """Open an authenticated connection to the server at `address`.

    Raises HandshakeError unless the server proves it holds `expected_peer_id`'s key, and
    ConnectionClosed if it cannot be reached; TCP connect and handshake together take at
    most `limits.handshake_timeout`. Requests from the server, if any, go to `handler`.
    The connection closes when the block exits.
    """
    limits = limits or Limits()
    host, port = parse_address(address)
    try:
        with trio.fail_after(limits.handshake_timeout):
            tcp = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise ConnectionClosed(f"cannot reach {host}:{port}: {exc}") from exc
    except trio.TooSlowError:
        raise ConnectionClosed(f"cannot reach {host}:{port}: connect timed out") from None
    stream = SocketByteStream(tcp)
    try:
        with trio.fail_after(limits.handshake_timeout):
            connection = await Connection.open_client(
                stream, identity, expected_peer_id, limits, handler
            )
    except trio.TooSlowError:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise HandshakeError(f"handshake with {host}:{port} timed out") from None
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise
    body_error: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        try:
            yield connection
        except Exception as exc:  # re-raised below, unwrapped by the nursery
            body_error = exc
        finally:
            await connection.aclose()
    if body_error is not None:
        raise body_error
