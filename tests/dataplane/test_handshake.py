"""The handshake authenticates both peer ids and refuses impostors and tampering.

Runs over trio memory streams; a relay between the two sides can flip one byte at a chosen
offset of either direction, which must always make the handshake fail.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from plexus.identity import Identity
from plexus.p2p.dataplane.aead import TAG_BYTES
from plexus.p2p.dataplane.errors import ConnectionClosed, HandshakeError
from plexus.p2p.dataplane.handshake import (
    CLIENT_CONTEXT,
    MAGIC,
    MSG1_BYTES,
    MSG2_BYTES,
    PREFIX,
    PROTOCOL,
    SessionKeys,
    _hash,
    client_handshake,
    server_handshake,
)
from plexus.p2p.dataplane.stream import BufferedReceiver, TrioByteStream
from tests.dataplane.helpers import new_identity

Outcome = SessionKeys | BaseException


async def relay(source: trio.abc.Stream, dest: trio.abc.Stream, flip_at: int | None) -> None:
    """Copy `source` to `dest`, XOR-ing the byte at offset `flip_at` with 0x01."""
    offset = 0
    try:
        while data := await source.receive_some(65536):
            chunk = bytearray(data)
            if flip_at is not None and offset <= flip_at < offset + len(chunk):
                chunk[flip_at - offset] ^= 0x01
            offset += len(chunk)
            await dest.send_all(bytes(chunk))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await dest.aclose()


async def handshake(
    client_id: Identity,
    server_id: Identity,
    expected: str,
    *,
    flip_to_server: int | None = None,
    flip_to_client: int | None = None,
) -> tuple[Outcome, Outcome]:
    """(client outcome, server outcome) of one handshake through a tampering relay."""
    client_side, relay_client = trio.testing.memory_stream_pair()
    relay_server, server_side = trio.testing.memory_stream_pair()
    outcomes: dict[str, Outcome] = {}

    async def client() -> None:
        stream = TrioByteStream(client_side)
        try:
            outcomes["client"] = await client_handshake(
                stream, BufferedReceiver(stream), client_id, expected, 5
            )
        except (HandshakeError, ConnectionClosed) as exc:
            outcomes["client"] = exc
            await client_side.aclose()

    async def server() -> None:
        stream = TrioByteStream(server_side)
        try:
            outcomes["server"] = await server_handshake(
                stream, BufferedReceiver(stream), server_id, 5
            )
        except (HandshakeError, ConnectionClosed) as exc:
            outcomes["server"] = exc
            await server_side.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, relay_client, relay_server, flip_to_server)
            nursery.start_soon(relay, relay_server, relay_client, flip_to_client)
            nursery.start_soon(client)
            await server()
            await trio.sleep(0.05)
            await client_side.aclose()
            nursery.cancel_scope.cancel()
    return outcomes["client"], outcomes["server"]


def assert_keys_pair_up(client: SessionKeys, server: SessionKeys) -> None:
    for sender, receiver in ((client.sender, server.receiver), (server.sender, client.receiver)):
        frame = bytearray(b"frame" + bytes(TAG_BYTES))
        sender.seal_in_place(memoryview(frame), 5, b"")
        assert receiver.open_in_place(memoryview(frame), b"") == 5
        assert frame[:5] == b"frame"
    other = bytearray(b"frame" + bytes(TAG_BYTES))
    client.sender.seal_in_place(memoryview(other), 5, b"")
    with pytest.raises(Exception):  # noqa: B017 - the directions use different keys
        client.receiver.open_in_place(memoryview(other), b"")


async def test_both_sides_learn_the_authenticated_peer_ids() -> None:
    client_id, server_id = new_identity(), new_identity()
    client, server = await handshake(client_id, server_id, server_id.peer_id_str)
    assert isinstance(client, SessionKeys) and isinstance(server, SessionKeys)
    assert client.peer_id == server_id.peer_id_str
    assert server.peer_id == client_id.peer_id_str
    assert server.peer_public_key == client_id.public_key_bytes
    assert_keys_pair_up(client, server)


async def test_wrong_expected_peer_id_is_refused() -> None:
    server_id, impostor_target = new_identity(), new_identity()
    client, server = await handshake(new_identity(), server_id, impostor_target.peer_id_str)
    assert isinstance(client, HandshakeError)
    assert server_id.peer_id_str in str(client) and "expected" in str(client)
    assert not isinstance(server, SessionKeys)


async def test_a_malformed_expected_peer_id_is_refused() -> None:
    client, _server = await handshake(new_identity(), new_identity(), "not-a-peer-id")
    assert isinstance(client, HandshakeError)


# Offsets: msg1 = prefix(8) | client ephemeral(32) | expected key(32); msg3 follows at 72 with
# client key(32) | signature(64). msg2 = prefix(8) | server ephemeral(32) | server key(32) |
# signature(64).
@pytest.mark.parametrize(
    ("direction", "offset", "who_fails"),
    [
        ("to_client", 8 + 5, "client"),  # server ephemeral key
        ("to_client", 72 + 10, "client"),  # server signature
        ("to_server", 8 + 3, "client"),  # client ephemeral: server signs what it saw
        ("to_server", 40 + 7, "client"),  # the expected server key is in the transcript
        ("to_server", MSG1_BYTES + 5, "server"),  # client identity key
        ("to_server", MSG1_BYTES + 32 + 9, "server"),  # client signature
    ],
)
async def test_any_flipped_bit_fails_the_handshake(
    direction: str, offset: int, who_fails: str
) -> None:
    server_id = new_identity()
    flips = {"flip_to_client" if direction == "to_client" else "flip_to_server": offset}
    client, server = await handshake(new_identity(), server_id, server_id.peer_id_str, **flips)
    failed = client if who_fails == "client" else server
    assert isinstance(failed, HandshakeError)
    assert not (isinstance(client, SessionKeys) and isinstance(server, SessionKeys))


async def fake_server(reply: bytes) -> Outcome:
    """Run a client handshake against a peer that answers msg1 with `reply`, then EOF."""
    client_side, server_side = trio.testing.memory_stream_pair()
    server_id = new_identity()
    outcome: list[Outcome] = []

    async def client() -> None:
        stream = TrioByteStream(client_side)
        try:
            outcome.append(
                await client_handshake(
                    stream, BufferedReceiver(stream), new_identity(), server_id.peer_id_str, 5
                )
            )
        except (HandshakeError, ConnectionClosed) as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            await server_side.receive_some(MSG1_BYTES)
            await server_side.send_all(reply)
            await server_side.aclose()
    return outcome[0]


async def test_client_refuses_a_peer_that_is_not_a_dataplane_server() -> None:
    outcome = await fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(200))
    assert isinstance(outcome, HandshakeError) and "magic" in str(outcome)


async def test_client_reports_a_version_mismatch() -> None:
    outcome = await fake_server(PREFIX.pack(MAGIC, 2, 0, 0))
    assert isinstance(outcome, HandshakeError) and "version 2" in str(outcome)


async def test_client_reports_a_truncated_reply() -> None:
    outcome = await fake_server(PREFIX.pack(MAGIC, 1, 0, 0) + bytes(10))
    assert isinstance(outcome, ConnectionClosed | HandshakeError)


async def raw_server_exchange(msg1: bytes, msg3_builder=None) -> tuple[bytes, BaseException]:
    """Send `msg1` to a real server handshake; return its reply and its failure."""
    client_side, server_side = trio.testing.memory_stream_pair()
    server_id = new_identity()
    failure: list[BaseException] = []

    async def server() -> None:
        stream = TrioByteStream(server_side)
        try:
            await server_handshake(stream, BufferedReceiver(stream), server_id, 5)
        except (HandshakeError, ConnectionClosed) as exc:
            failure.append(exc)
        await server_side.aclose()

    reply = b""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            await client_side.send_all(msg1)
            while len(reply) < MSG2_BYTES and (data := await client_side.receive_some(4096)):
                reply += data
            if msg3_builder is not None and len(reply) == MSG2_BYTES:
                await client_side.send_all(msg3_builder(reply))
            else:
                await client_side.aclose()
    return reply, failure[0]


async def test_server_answers_another_version_with_its_own_and_closes() -> None:
    msg1 = PREFIX.pack(MAGIC, 9, 0, 0) + bytes(64)
    reply, failure = await raw_server_exchange(msg1)
    assert reply == PREFIX.pack(MAGIC, 1, 0, 0)
    assert "version 9" in str(failure)


async def test_server_refuses_bad_magic_silently() -> None:
    reply, failure = await raw_server_exchange(b"GET / HTTP/1.1\r\n" + bytes(56))
    assert reply == b""
    assert "magic" in str(failure)


async def test_server_refuses_a_degenerate_ephemeral_key() -> None:
    client_id = new_identity()
    msg1 = PREFIX.pack(MAGIC, 1, 0, 0) + bytes(32) + bytes(32)  # all-zero X25519 point

    def msg3(msg2: bytes) -> bytes:
        key = client_id.public_key_bytes
        return key + client_id.sign(CLIENT_CONTEXT + _hash(PROTOCOL + msg1 + msg2 + key))

    _reply, failure = await raw_server_exchange(msg1, msg3)
    assert isinstance(failure, HandshakeError) and "degenerate" in str(failure)
