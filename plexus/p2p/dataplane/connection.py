"""One authenticated connection: request/reply multiplexing and request dispatch.

Both ends are symmetric once the handshake is done: either may send requests (replies are
matched by id in the sender's own id space) and either may have a handler for the other's
requests. One reader task per connection receives every message; replies wake the waiting
`request` call, requests run as handler tasks in the connection's nursery.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from plexus import __version__
from plexus.errors import ProtocolError
from plexus.identity import Identity
from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.errors import (
    ConnectionClosed,
    HandshakeError,
    RemoteError,
    RequestTimeout,
    WireError,
)
from plexus.p2p.dataplane.framing import FramedChannel
from plexus.p2p.dataplane.handshake import VERSION, client_handshake, server_handshake
from plexus.p2p.dataplane.limits import MIN_CONTINUED_FRAME, PROTOCOL_MAX_FRAME, Limits, PeerLimits
from plexus.p2p.dataplane.message import (
    EncodedMessage,
    Kind,
    Message,
    decode_message,
    encode_message,
    error_message,
)
from plexus.p2p.dataplane.stream import BufferedReceiver, ByteStream

log = logging.getLogger(__name__)

Handler = Callable[[str, Message], Awaitable[Message | None]]
"""`handler(peer_id, message)`: the reply to a request (ignored for one-way messages).
Raise `ProtocolError(text, code)` to answer with that error code."""

DEFAULT_REQUEST_TIMEOUT = 60.0


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Message | None = None


class PendingReply:
    """A request already sent (`Connection.send_request`) whose reply is still to come."""

    def __init__(self, conn: Connection, request_id: int, waiter: _Waiter, what: str) -> None:
        self._conn, self._id, self._waiter, self._what = conn, request_id, waiter, what

    @property
    def arrived(self) -> bool:
        """Whether the reply (or an error, or the connection's end) is here."""
        return self._waiter.event.is_set()

    async def wait(self, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Message:
        timed_out = False
        try:
            if not self._waiter.event.is_set():  # no cancel scope when the reply is here
                with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                    await self._waiter.event.wait()
                timed_out = scope.cancelled_caught
        finally:
            self._conn._pending.pop(self._id, None)
        return self._conn._reply_of(self._waiter, self._what, timeout, timed_out)

    def abandon(self) -> None:
        """Stop waiting: a late reply is dropped."""
        self._conn._pending.pop(self._id, None)


class Connection:
    """Use `connect()` (dialer) or `serve_dataplane()` (listener) to get one."""

    def __init__(
        self, channel: FramedChannel, peer_id: str, limits: Limits, handler: Handler | None
    ) -> None:
        self._channel = channel
        self.peer_id = peer_id
        self.limits = limits
        self._handler = handler
        # Router.runs_inline: handlers that never wait run in the reader (no task start).
        self._runs_inline: Callable[[Message], bool] | None = getattr(handler, "runs_inline", None)
        self._ids = itertools.count(1)
        self._pending: dict[int, _Waiter] = {}
        self._in_flight = 0
        self._buffered = 0
        self._handler_done = trio.Event()
        self._closed_reason: str | None = None
        self._finished = trio.Event()

    # --- opening -------------------------------------------------------------------------

    @classmethod
    async def open_client(
        cls,
        stream: ByteStream,
        identity: Identity,
        expected_peer_id: str,
        limits: Limits,
        handler: Handler | None = None,
    ) -> Connection:
        """Handshake as dialer and exchange `_hello`s; the caller bounds the time."""
        receiver = BufferedReceiver(stream)
        keys = await client_handshake(
            stream, receiver, identity, expected_peer_id, limits.handshake_timeout
        )
        channel = FramedChannel(stream, receiver, keys.sender, keys.receiver, limits)
        connection = cls(channel, keys.peer_id, limits, handler)
        await connection._exchange_hello()
        return connection

    @classmethod
    async def open_server(
        cls, stream: ByteStream, identity: Identity, limits: Limits, handler: Handler | None
    ) -> Connection:
        """Handshake as listener and exchange `_hello`s; the caller bounds the time."""
        receiver = BufferedReceiver(stream)
        keys = await server_handshake(stream, receiver, identity, limits.handshake_timeout)
        channel = FramedChannel(stream, receiver, keys.sender, keys.receiver, limits)
        connection = cls(channel, keys.peer_id, limits, handler)
        await connection._exchange_hello()
        return connection

    async def _exchange_hello(self) -> None:
        hello = Message(
            "_hello",
            {
                "version": VERSION,
                "max_frame": self.limits.max_frame,
                "max_message": self.limits.max_message,
                "max_in_flight": self.limits.max_in_flight,
                "agent": f"plexus/{__version__}",
            },
        )
        encoded = encode_message(hello, Kind.CONTROL, 0)
        await self._channel.send_message(encoded.parts, encoded.nbytes)
        try:
            data = await self._channel.receive_message(self.limits.handshake_timeout)
        except WireError as exc:
            raise HandshakeError(f"bad first frame: {exc}") from exc
        if data is None:
            raise HandshakeError("peer closed the connection after the key exchange")
        try:
            reply = decode_message(data, self.limits)
        except WireError as exc:
            raise HandshakeError(f"bad _hello: {exc}") from exc
        if reply.kind == Kind.ERROR:
            raise _remote_error(reply)
        if reply.kind != Kind.CONTROL or reply.type != "_hello":
            raise HandshakeError(f"expected _hello, got {reply.type!r}")
        self._channel.peer = _peer_limits(reply.fields)

    # --- public API ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    @property
    def peer_limits(self) -> PeerLimits:
        return self._channel.peer

    @property
    def in_flight(self) -> int:
        """Requests from the peer being handled now."""
        return self._in_flight

    async def request(
        self, message: Message, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    ) -> Message:
        """Send `message` as a request and return the reply.

        Raises RemoteError (the peer answered with an error code), RequestTimeout,
        ConnectionClosed, or ValueError for content that cannot be sent (dtype, JSON, size).
        A frame already being written finishes even if the timeout passes meanwhile.
        """
        request_id = next(self._ids)
        encoded = self._encode(message, Kind.REQUEST, request_id)
        waiter = _Waiter()
        self._pending[request_id] = waiter
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                await self._channel.send_message(encoded.parts, encoded.nbytes)
                await waiter.event.wait()
        finally:
            self._pending.pop(request_id, None)
        return self._reply_of(waiter, message.type, timeout, scope.cancelled_caught)

    async def send_request(self, message: Message) -> PendingReply:
        """Send `message` as a request now; await the reply later with `PendingReply.wait`
        (which, like `request`, raises for errors, timeouts and closed connections)."""
        request_id = next(self._ids)
        encoded = self._encode(message, Kind.REQUEST, request_id)
        waiter = _Waiter()
        self._pending[request_id] = waiter
        try:
            await self._channel.send_message(encoded.parts, encoded.nbytes)
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        return PendingReply(self, request_id, waiter, message.type)

    def _reply_of(
        self, waiter: _Waiter, what: str, timeout: float | None, timed_out: bool
    ) -> Message:
        if timed_out:
            raise RequestTimeout(f"no reply to {what!r} from {self.peer_id} in {timeout} s")
        reply = waiter.reply
        if reply is None:
            raise ConnectionClosed(f"connection to {self.peer_id} closed: {self._closed_reason}")
        if reply.kind == Kind.ERROR:
            raise _remote_error(reply)
        return reply

    async def send(self, message: Message) -> None:
        """Send `message` one-way (no reply; a failure may come back as a logged error)."""
        request_id = next(self._ids)
        encoded = self._encode(message, Kind.ONEWAY, request_id)
        await self._channel.send_message(encoded.parts, encoded.nbytes)

    async def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time in seconds of a `_ping` the peer's data plane answers itself."""
        start = trio.current_time()
        await self.request(Message("_ping"), timeout=timeout)
        return trio.current_time() - start

    async def aclose(self, reason: str = "closed locally") -> None:
        """Close the connection; the reader and running handlers stop, waiters fail."""
        if self._closed_reason is None:
            self._closed_reason = reason
        await self._channel.aclose(reason)
        self._fail_waiters()

    async def wait_closed(self) -> None:
        await self._finished.wait()

    def _encode(self, message: Message, kind: Kind, request_id: int) -> EncodedMessage:
        if self.closed:
            raise ConnectionClosed(f"connection to {self.peer_id} closed: {self._closed_reason}")
        encoded = encode_message(message, kind, request_id)
        if encoded.nbytes > self._channel.peer.max_message:
            raise ValueError(
                f"message of {encoded.nbytes} bytes exceeds the peer's limit of "
                f"{self._channel.peer.max_message}"
            )
        return encoded

    # --- the reader ----------------------------------------------------------------------

    async def run(self) -> None:
        """Read and dispatch until the connection ends; never raises except on cancellation."""
        try:
            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as reader_scope:
                    nursery.start_soon(self._watchdog, reader_scope)
                    await self._read_loop(nursery)
                nursery.cancel_scope.cancel()
        finally:
            await self.aclose(self._closed_reason or "reader stopped")
            self._finished.set()

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while True:
            await self._wait_for_room()
            try:
                data = await self._channel.receive_message(self.limits.idle_timeout)
            except WireError as exc:  # the frames themselves are bad: answer, then close
                log.debug("closing connection to %s: %s", self.peer_id, exc)
                await self._send_error(exc.request_id, exc.code, str(exc))
                self._closed_reason = f"bad frame from peer: {exc}"
                return
            except ConnectionClosed as exc:
                self._closed_reason = self._closed_reason or str(exc)
                return
            if data is None:
                self._closed_reason = self._closed_reason or "closed by peer"
                return
            try:
                message = decode_message(data, self.limits)
            except WireError as exc:
                await self._send_error(exc.request_id, exc.code, str(exc))
                continue
            try:
                await self._dispatch(message, len(data), nursery)
            except ConnectionClosed as exc:
                self._closed_reason = self._closed_reason or str(exc)
                return

    async def _watchdog(self, reader_scope: trio.CancelScope) -> None:
        """Enforce the reader's deadlines (idle, stalled frames) by cancelling it.

        One sleeping task per connection instead of a cancel scope per receive: checks
        every `tick` seconds, so timeouts fire up to a tick late. Waiting for a new message
        is not idleness while requests are outstanding in either direction.
        """
        limits = self.limits
        tick = min(1.0, limits.read_timeout / 4, limits.idle_timeout / 4)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            state = self._channel.overdue(now)
            if state is None:
                continue
            if state == "idle":
                if self._pending or self._in_flight:
                    self._channel.extend_wait(now, limits.idle_timeout)
                    continue
                self._closed_reason = f"idle for {limits.idle_timeout} s"
            else:
                self._closed_reason = f"peer stalled for {limits.read_timeout} s inside a message"
            log.debug("closing connection to %s: %s", self.peer_id, self._closed_reason)
            reader_scope.cancel()
            return

    async def _wait_for_room(self) -> None:
        while self._buffered > self.limits.max_buffered:
            self._handler_done = trio.Event()
            await self._handler_done.wait()

    async def _dispatch(self, message: Message, size: int, nursery: trio.Nursery) -> None:
        kind = message.kind
        if kind in (Kind.REPLY, Kind.ERROR):
            waiter = self._pending.get(message.request_id)
            if waiter is not None:
                waiter.reply = message
                waiter.event.set()
            elif kind == Kind.ERROR:
                log.warning(
                    "error from %s about message %d: %s",
                    self.peer_id,
                    message.request_id,
                    message.fields,
                )
            return
        if kind == Kind.CONTROL:
            await self._send_error(
                message.request_id,
                ErrorCode.MALFORMED,
                f"unexpected control message {message.type!r}",
            )
            return
        if message.type == "_ping":
            if kind == Kind.REQUEST:
                await self._send_reply(message.request_id, Message("_pong"))
            return
        if message.type.startswith("_") or self._handler is None:
            await self._send_error(
                message.request_id, ErrorCode.UNKNOWN_TYPE, f"unknown message type {message.type!r}"
            )
            return
        if self._in_flight >= self.limits.max_in_flight:
            await self._send_error(
                message.request_id,
                ErrorCode.BUSY,
                f"more than {self.limits.max_in_flight} requests in flight",
            )
            return
        self._in_flight += 1
        self._buffered += size
        if self._runs_inline is not None and self._runs_inline(message):
            await self._handle(message, size)  # a handler that does not wait (Router.route)
        else:
            nursery.start_soon(self._handle, message, size)

    async def _handle(self, message: Message, size: int) -> None:
        assert self._handler is not None
        try:
            reply = await self._run_handler(message)
            if message.kind == Kind.REQUEST or reply.type == "_error":
                await self._send_reply(message.request_id, reply)
        except ConnectionClosed:
            pass
        finally:
            self._in_flight -= 1
            self._buffered -= size
            self._handler_done.set()

    async def _run_handler(self, message: Message) -> Message:
        assert self._handler is not None
        limit = self.limits.handler_timeout
        timed_out = False
        try:
            if limit is None:
                reply = await self._handler(self.peer_id, message)
            else:
                with trio.move_on_after(limit) as scope:
                    reply = await self._handler(self.peer_id, message)
                timed_out = scope.cancelled_caught
        except ProtocolError as exc:
            return error_message(exc.code, str(exc))
        except Exception as exc:
            log.exception("handler for %r from %s failed", message.type, self.peer_id)
            return error_message(ErrorCode.INTERNAL, f"handler failed: {type(exc).__name__}")
        if timed_out:
            return error_message(ErrorCode.TIMEOUT, f"handler took longer than {limit} s")
        if message.kind == Kind.REQUEST and not isinstance(reply, Message):
            log.error("handler for %r returned %r, not a Message", message.type, type(reply))
            return error_message(ErrorCode.INTERNAL, "handler returned no reply")
        return reply if isinstance(reply, Message) else Message("_none")

    async def _send_reply(self, request_id: int, reply: Message) -> None:
        kind = Kind.ERROR if reply.type == "_error" else Kind.REPLY
        try:
            encoded = encode_message(reply, kind, request_id)
            if encoded.nbytes > self._channel.peer.max_message:
                raise ValueError(f"reply of {encoded.nbytes} bytes exceeds the peer's limit")
        except ValueError as exc:
            log.error("cannot send reply to %s: %s", self.peer_id, exc)
            encoded = encode_message(
                error_message(ErrorCode.INTERNAL, f"reply could not be encoded: {exc}"),
                Kind.ERROR,
                request_id,
            )
        await self._channel.send_message(encoded.parts, encoded.nbytes)

    async def _send_error(self, request_id: int, code: int, text: str) -> None:
        """Best effort: a peer that does not read gets disconnected after the send timeout."""
        encoded = encode_message(error_message(code, text), Kind.ERROR, request_id)
        with contextlib.suppress(ConnectionClosed):
            await self._channel.send_message(encoded.parts, encoded.nbytes)

    def _fail_waiters(self) -> None:
        for waiter in self._pending.values():
            waiter.event.set()


def _remote_error(reply: Message) -> RemoteError:
    code = reply.fields.get("code")
    text = reply.fields.get("message")
    return RemoteError(
        str(text) if text is not None else "",
        code if isinstance(code, int) and not isinstance(code, bool) else ErrorCode.INTERNAL,
    )


def _peer_limits(fields: dict[str, Any]) -> PeerLimits:
    defaults = PeerLimits()

    def positive(name: str, default: int) -> int:
        value = fields.get(name, default)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise HandshakeError(f"peer's _hello has an invalid {name}: {value!r}")

    max_frame = positive("max_frame", defaults.max_frame)
    if max_frame < MIN_CONTINUED_FRAME:
        raise HandshakeError(f"peer's max_frame {max_frame} is under {MIN_CONTINUED_FRAME}")
    return PeerLimits(
        max_frame=min(max_frame, PROTOCOL_MAX_FRAME),
        max_message=positive("max_message", defaults.max_message),
        max_in_flight=positive("max_in_flight", defaults.max_in_flight),
    )
