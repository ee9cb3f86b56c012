"""Client against a real server process over TCP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import trio

from plexus.p2p.dataplane import HandshakeError, Message, RemoteError, connect
from plexus.p2p.dataplane.limits import MiB
from tests.dataplane.helpers import ServerProcess, echo_server, new_identity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with echo_server() as process:
        yield process


async def test_tensors_of_every_dtype_round_trip(server: ServerProcess) -> None:
    tensors = [
        torch.randn(1, 7, 64, dtype=torch.bfloat16),
        torch.randn(1, 7, 64).half(),
        torch.randn(3, 3),
        torch.arange(12, dtype=torch.int64).reshape(3, 4),
        torch.arange(5, dtype=torch.int32),
        torch.tensor([-128, 0, 127], dtype=torch.int8),
        torch.tensor([0, 255], dtype=torch.uint8),
        torch.tensor([[True, False]]),
        torch.zeros(0, 5),
        torch.tensor(3.5),
    ]
    async with connect(new_identity(), server.address, server.peer_id) as conn:
        reply = await conn.request(Message("echo", {"nested": {"a": [1, 2]}}, tensors), timeout=10)
        assert reply.fields == {"nested": {"a": [1, 2]}}
        for sent, received in zip(tensors, reply.tensors, strict=True):
            assert received.dtype == sent.dtype and torch.equal(received, sent)
        added = await conn.request(Message("add", {"value": 2}, [torch.ones(4)]), timeout=10)
        assert torch.equal(added.tensors[0], torch.full((4,), 3.0))


async def test_the_server_learns_the_clients_peer_id(server: ServerProcess) -> None:
    identity = new_identity()
    async with connect(identity, server.address, server.peer_id) as conn:
        reply = await conn.request(Message("whoami"), timeout=10)
    assert reply.fields["peer_id"] == identity.peer_id_str


async def test_a_server_with_another_id_is_refused(server: ServerProcess) -> None:
    with pytest.raises(HandshakeError):
        async with connect(new_identity(), server.address, new_identity().peer_id_str):
            pass


async def test_messages_larger_than_a_frame(server: ServerProcess) -> None:
    big = torch.randn(17 * MiB // 4)  # 17 MiB: over the 16 MiB frame limit
    async with connect(new_identity(), server.address, server.peer_id) as conn:
        reply = await conn.request(Message("echo", {}, [big]), timeout=60)
    assert torch.equal(reply.tensors[0], big)


async def test_compressed_hidden_states(server: ServerProcess) -> None:
    hidden = torch.randn(1, 8, 256).half()
    async with connect(new_identity(), server.address, server.peer_id) as conn:
        reply = await conn.request(Message("echo", {}, [hidden], compress=True), timeout=10)
    assert reply.tensors[0].dtype == torch.float16
    relative = (reply.tensors[0].float() - hidden.float()).norm() / hidden.float().norm()
    assert float(relative) < 1e-2


async def test_error_codes_cross_the_wire(server: ServerProcess) -> None:
    async with connect(new_identity(), server.address, server.peer_id) as conn:
        with pytest.raises(RemoteError) as info:
            await conn.request(Message("refuse", {"message": "unknown session", "code": 100}))
        assert info.value.code == 100 and "unknown session" in str(info.value)
        with pytest.raises(RemoteError) as info:
            await conn.request(Message("fail"))
        assert info.value.code == 6


async def test_concurrent_requests_on_several_connections(server: ServerProcess) -> None:
    checked = 0

    async def client(index: int) -> None:
        async with (
            connect(new_identity(), server.address, server.peer_id) as conn,
            trio.open_nursery() as nursery,
        ):
            for step in range(10):
                nursery.start_soon(one, conn, index * 100 + step)

    async def one(conn, value: int) -> None:
        nonlocal checked
        reply = await conn.request(Message("add", {"value": value}, [torch.zeros(3)]), timeout=20)
        assert torch.equal(reply.tensors[0], torch.full((3,), float(value)))
        checked += 1

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for index in range(4):
                nursery.start_soon(client, index)
    assert checked == 40
