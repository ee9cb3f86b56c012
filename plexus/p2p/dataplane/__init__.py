"""The tensor data plane: authenticated, encrypted request/reply over its own TCP port.

Discovery stays on libp2p; hidden states travel here (see docs/protocol.md, Part 2).

    server = await nursery.start(serve_dataplane, identity, "127.0.0.1", 0, handler)
    async with connect(identity, ("127.0.0.1", server.port), server.peer_id) as conn:
        reply = await conn.request(Message("forward", {"session": 1}, [hidden]), timeout=5)
"""

from plexus.p2p.dataplane.client import connect, parse_address
from plexus.p2p.dataplane.codes import ErrorCode, code_name
from plexus.p2p.dataplane.connection import Connection, Handler
from plexus.p2p.dataplane.errors import (
    ConnectionClosed,
    HandshakeError,
    RemoteError,
    RequestTimeout,
    WireError,
)
from plexus.p2p.dataplane.limits import Limits, PeerLimits
from plexus.p2p.dataplane.message import Kind, Message
from plexus.p2p.dataplane.router import Router
from plexus.p2p.dataplane.server import DataplaneServer, serve_dataplane

__all__ = [
    "Connection",
    "ConnectionClosed",
    "DataplaneServer",
    "ErrorCode",
    "Handler",
    "HandshakeError",
    "Kind",
    "Limits",
    "Message",
    "PeerLimits",
    "RemoteError",
    "RequestTimeout",
    "Router",
    "WireError",
    "code_name",
    "connect",
    "parse_address",
    "serve_dataplane",
]
