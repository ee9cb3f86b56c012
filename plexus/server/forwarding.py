"""Server-to-server forwarding: a span's output goes straight to the next server.

Per session, the server keeps the client's latest route grant (plexus.p2p.route_grant),
which names the hop before it (the only peer besides the client that may feed it input)
and the hop after it (where its output goes). A `step` with `forward` pushes the output
to the next hop as a one-way `push`; a `step` with `upstream` waits for that push instead
of carrying hidden states itself. docs/protocol.md, Part 5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import trio

from plexus.client.pool import ConnectionPool
from plexus.errors import NetworkError
from plexus.p2p.dataplane import Connection, Message
from plexus.p2p.route_grant import GrantError, GrantHop, read_grant
from plexus.server.backend import ServerSession
from plexus.server.errors import ServerCode, ServerError

log = logging.getLogger(__name__)

DIAL_TIMEOUT_S = 5.0  # connecting to the next hop (handshake included)
MAX_WAIT_S = 600.0  # longest a `step` with `upstream` may wait for its input


@dataclass
class ChainState:
    """What one session knows of its place in the client's chain."""

    grant_seq: int = -1
    prev_peer: str | None = None  # may push input besides the owner
    next_hop: GrantHop | None = None  # receives this span's output
    inbox: tuple[int, torch.Tensor, torch.Tensor | None] | None = None  # (length, hidden, mask)
    arrived: trio.Event = field(default_factory=trio.Event)
    waiting: trio.CancelScope | None = None  # the step waiting for its input, if any
    superseded: bool = False  # the waiting step was replaced by a newer request


def chain_of(session: ServerSession) -> ChainState:
    if session.chain is None:
        session.chain = ChainState()
    return session.chain  # type: ignore[no-any-return]


class Forwarder:
    """Grants, forwarded input and pushes to next hops for one block server."""

    def __init__(
        self,
        peer_id: str,
        network_id: str,
        model_id: str,
        pool: ConnectionPool,
        nursery: trio.Nursery,
        *,
        send_in_background: bool = False,
    ) -> None:
        self.peer_id = peer_id
        self.network_id = network_id
        self.model_id = model_id
        self.pool = pool
        self._nursery = nursery
        # With emulated latency a send sleeps first: push from a task so that the reply
        # to the client is not held back behind it.
        self._background = send_in_background
        self.pushes_sent = 0
        self.pushes_received = 0
        self.push_failures = 0

    # -- grants ---------------------------------------------------------------------------
    def accept_grant(self, session: ServerSession, fields: dict[str, Any]) -> None:
        """Take the route grant in a step request from the session's owner."""
        signed = read_grant(fields, session.owner)
        grant = signed.grant
        if grant.network_id != self.network_id or grant.model_id != self.model_id:
            raise GrantError("the grant is for another network or model")
        index = grant.index_of(self.peer_id, session.id)
        if index is None:
            raise GrantError("the grant does not name this server and session")
        mine = grant.hops[index]
        if (mine.start, mine.end) != (session.start, session.end):
            raise GrantError(f"the grant gives this hop blocks {mine.start}-{mine.end}")
        chain = chain_of(session)
        if grant.seq <= chain.grant_seq:
            raise GrantError(f"seq {grant.seq} is not newer than {chain.grant_seq}")
        chain.grant_seq = grant.seq
        chain.prev_peer = grant.hops[index - 1].peer_id if index > 0 else None
        chain.next_hop = grant.hops[index + 1] if index + 1 < len(grant.hops) else None
        if chain.next_hop is not None and chain.next_hop.peer_id != self.peer_id:
            self._nursery.start_soon(self._predial, chain.next_hop)

    async def _predial(self, hop: GrantHop) -> None:
        with trio.move_on_after(DIAL_TIMEOUT_S):
            try:
                await self.pool.get(hop.peer_id, hop.addr)
            except NetworkError as exc:
                log.info("cannot reach next hop %s at %s: %s", hop.peer_id, hop.addr, exc)

    # -- input pushed by the previous hop ---------------------------------------------------
    def may_push(self, session: ServerSession, peer_id: str) -> bool:
        chain = session.chain
        return peer_id == session.owner or (chain is not None and peer_id == chain.prev_peer)

    def deliver(
        self, session: ServerSession, length: int, hidden: torch.Tensor, mask: torch.Tensor | None
    ) -> None:
        """Keep a pushed input until the step that follows `length` takes it."""
        chain = chain_of(session)
        chain.inbox = (length, hidden, mask)
        chain.arrived.set()
        self.pushes_received += 1

    def supersede(self, session: ServerSession) -> None:
        """A newer request for the session: a step still waiting for input gives up."""
        chain = session.chain
        if chain is not None and chain.waiting is not None:
            chain.superseded = True
            chain.waiting.cancel()

    async def wait_input(
        self, session: ServerSession, length: int, timeout: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The input pushed for the step after `length` (waiting at most `timeout`)."""
        chain = chain_of(session)
        if chain.prev_peer is None and chain.grant_seq < 0:
            raise ServerError(ServerCode.MALFORMED_REQUEST, "upstream input needs a route grant")
        self.supersede(session)
        with trio.move_on_after(min(timeout, MAX_WAIT_S)) as scope:
            chain.waiting, chain.superseded = scope, False
            try:
                while chain.inbox is None or chain.inbox[0] != length:
                    chain.arrived = trio.Event()
                    await chain.arrived.wait()
            finally:
                if chain.waiting is scope:
                    chain.waiting = None
        if scope.cancelled_caught or chain.inbox is None or chain.inbox[0] != length:
            if chain.superseded:
                raise ServerError(ServerCode.SUPERSEDED, "a newer request replaced this step")
            raise ServerError(
                ServerCode.UPSTREAM_TIMEOUT,
                f"no input from the previous hop within {timeout:.3f} s",
            )
        _, hidden, mask = chain.inbox
        chain.inbox = None
        return hidden, mask

    # -- pushing output to the next hop ----------------------------------------------------
    async def push(
        self,
        session: ServerSession,
        length: int,
        out: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> bool:
        """Send this step's output to the next hop; False if it cannot be reached."""
        chain = session.chain
        hop = chain.next_hop if chain is not None else None
        if hop is None:
            return False
        conn: Connection | None = None
        with trio.move_on_after(DIAL_TIMEOUT_S):
            try:
                conn = await self.pool.get(hop.peer_id, hop.addr)
            except NetworkError as exc:
                log.info("next hop %s unreachable (%s): client relays", hop.peer_id, exc)
        if conn is None:
            self.push_failures += 1
            return False
        tensors = [out] if mask is None else [out, mask]
        message = Message("push", {"session_id": hop.session_id, "length": length}, tensors)
        if self._background:
            self._nursery.start_soon(self._send, conn, message, hop.peer_id)
            return True
        return await self._send(conn, message, hop.peer_id)

    async def _send(self, conn: Connection, message: Message, peer: str) -> bool:
        try:
            await conn.send(message)
        except (NetworkError, ValueError) as exc:
            self.push_failures += 1
            log.info("push to %s failed: %s", peer, exc)
            return False
        self.pushes_sent += 1
        return True
