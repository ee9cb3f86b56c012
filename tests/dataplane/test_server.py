"""The listener over real TCP on 127.0.0.1: connection limits, handshake and read timeouts,
and peers that stop reading, each costing only their own connection."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import torch
import trio

from plexus.p2p.dataplane import (
    ConnectionClosed,
    DataplaneServer,
    HandshakeError,
    Limits,
    Message,
    Router,
    connect,
    serve_dataplane,
)
from plexus.p2p.dataplane.handshake import MAGIC, PREFIX
from plexus.p2p.dataplane.message import Kind, encode_message
from tests.dataplane.helpers import RawClient, new_identity


def echo_router() -> Router:
    router = Router()

    @router.route("echo")
    async def echo(peer_id: str, message: Message) -> Message:
        return Message("echo", {"peer": peer_id}, message.tensors)

    return router


@asynccontextmanager
async def running_server(limits: Limits) -> AsyncIterator[DataplaneServer]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_dataplane, limits=limits),
            new_identity(),
            "127.0.0.1",
            0,
            echo_router(),
        )
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


async def round_trip(server: DataplaneServer) -> None:
    identity = new_identity()
    async with connect(identity, ("127.0.0.1", server.port), server.peer_id) as conn:
        reply = await conn.request(Message("echo", {}, [torch.arange(10)]), timeout=5)
        assert reply.fields["peer"] == identity.peer_id_str
        assert torch.equal(reply.tensors[0], torch.arange(10))


async def seconds_until_closed(stream: trio.SocketStream, limit: float) -> float:
    """How long until the server closes `stream` (reading and discarding what it sends)."""
    start = trio.current_time()
    with trio.fail_after(limit):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    return trio.current_time() - start


async def test_clients_reach_the_server_and_are_identified() -> None:
    async with running_server(Limits()) as server:
        await round_trip(server)
        with trio.fail_after(5):
            while server.connections:  # the client closed: the server forgets it
                await trio.sleep(0.02)
        assert server.sockets_open == 0


async def test_wrong_expected_peer_id_over_tcp() -> None:
    async with running_server(Limits()) as server:
        with pytest.raises(HandshakeError, match="expected"):
            async with connect(
                new_identity(), ("127.0.0.1", server.port), new_identity().peer_id_str
            ):
                pass
        await round_trip(server)


async def test_unreachable_server_is_a_connection_error() -> None:
    async with running_server(Limits()) as server:
        port = server.port
    with pytest.raises(ConnectionClosed):
        async with connect(new_identity(), ("127.0.0.1", port), new_identity().peer_id_str):
            pass


@pytest.mark.parametrize("send", [b"", PREFIX.pack(MAGIC, 1, 0, 0)])
async def test_a_handshake_that_never_finishes_is_dropped(send: bytes) -> None:
    async with running_server(Limits(handshake_timeout=0.5)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(send)
        assert await seconds_until_closed(stream, 5) < 2.0
        await round_trip(server)
        assert server.handshakes_failed >= 1


async def test_connections_over_the_limit_are_closed_at_once() -> None:
    async with running_server(Limits(max_connections=2, handshake_timeout=5)) as server:
        idle = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(2)]
        await trio.sleep(0.1)
        extra = await trio.open_tcp_stream("127.0.0.1", server.port)
        assert await seconds_until_closed(extra, 2) < 1.0
        for stream in idle:
            await stream.aclose()
        await trio.sleep(0.1)
        await round_trip(server)  # slots are freed when connections end


async def test_a_peer_stalling_inside_a_frame_is_dropped() -> None:
    async with running_server(Limits(read_timeout=0.4)) as server:
        async with RawClient.connect(("127.0.0.1", server.port), server.peer_id) as raw:
            await raw.tcp.send_all((1000).to_bytes(4, "big") + b"only part of a frame")
            with trio.fail_after(5):
                assert await raw.receive() is None
        await round_trip(server)


async def test_a_peer_that_stops_reading_is_dropped() -> None:
    limits = Limits(send_timeout=0.5, max_in_flight=8)
    async with running_server(limits) as server:
        address = ("127.0.0.1", server.port)
        async with RawClient.connect(address, server.peer_id, Limits(send_timeout=8)) as raw:
            big = torch.zeros(256 * 1024)  # 1 MiB echoed back per request, never read
            sent = 0
            start = trio.current_time()
            with trio.fail_after(7):  # well before this side's own send timeout
                try:
                    while True:
                        encoded = encode_message(Message("echo", {}, [big]), Kind.REQUEST, sent + 1)
                        await raw.channel.send_message(encoded.parts, encoded.nbytes)
                        sent += 1
                        await trio.sleep(0.001)
                except ConnectionClosed:
                    pass  # the server gave up on us and closed
                while server.connections:
                    await trio.sleep(0.05)
            assert sent >= 8
            assert trio.current_time() - start < 5
        await round_trip(server)
