"""Shared helpers for data-plane tests: identities, in-memory connection pairs, a server
subprocess, and a raw client that can put arbitrary bytes inside valid encrypted frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing

from plexus.identity import Identity
from plexus.p2p.dataplane.aead import TAG_BYTES, DirectionalCipher
from plexus.p2p.dataplane.connection import Connection, Handler
from plexus.p2p.dataplane.errors import ConnectionClosed, HandshakeError
from plexus.p2p.dataplane.framing import FramedChannel
from plexus.p2p.dataplane.handshake import client_handshake
from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.message import Kind, Message, decode_message, encode_message
from plexus.p2p.dataplane.stream import BufferedReceiver, SocketByteStream, TrioByteStream

REPO = Path(__file__).resolve().parents[2]


def new_identity() -> Identity:
    return Identity.generate(os.urandom(32))


@asynccontextmanager
async def memory_pair(
    server_handler: Handler | None,
    client_handler: Handler | None = None,
    *,
    server_limits: Limits | None = None,
    client_limits: Limits | None = None,
) -> AsyncIterator[tuple[Connection, Connection]]:
    """(client, server) connections over trio memory streams, both readers running."""
    server_id, client_id = new_identity(), new_identity()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    connections: dict[str, Connection] = {}

    async def open_server() -> None:
        connections["server"] = await Connection.open_server(
            TrioByteStream(server_stream), server_id, server_limits or Limits(), server_handler
        )

    async def open_client() -> None:
        connections["client"] = await Connection.open_client(
            TrioByteStream(client_stream),
            client_id,
            server_id.peer_id_str,
            client_limits or Limits(),
            client_handler,
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_server)
            nursery.start_soon(open_client)
    client, server = connections["client"], connections["server"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        nursery.start_soon(server.run)
        try:
            yield client, server
        finally:
            await client.aclose()
            await server.aclose()


@dataclass
class ServerProcess:
    host: str
    port: int
    peer_id: str
    process: subprocess.Popen[str]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def echo_server(*args: str) -> Iterator[ServerProcess]:
    """Run `python -m plexus.p2p.dataplane._echo_server ARGS` on 127.0.0.1 and stop it after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "plexus.p2p.dataplane._echo_server", "--host", "127.0.0.1", *args],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"echo server exited with {process.wait(timeout=10)}")
        info = json.loads(line)
        yield ServerProcess(info["host"], info["port"], info["peer_id"], process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class RawClient:
    """An authenticated client that sends arbitrary plaintext messages in valid frames.

    Built from the public layers (handshake, framing, message encoding) rather than
    `Connection`, so tests can send what a correct peer never would.
    """

    def __init__(
        self,
        tcp: trio.SocketStream,
        channel: FramedChannel,
        sender: DirectionalCipher,
        limits: Limits,
    ) -> None:
        self.tcp = tcp
        self.channel = channel
        self.sender = sender  # the channel's own cipher: frames sealed here stay in sequence
        self.limits = limits

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        address: tuple[str, int],
        peer_id: str,
        limits: Limits | None = None,
        *,
        attempts: int = 3,
    ) -> AsyncIterator[RawClient]:
        """Handshake and exchange `_hello`s; retried, since a server under attack with a
        short handshake timeout may drop an honest but slow handshake too."""
        limits = limits or Limits()
        for attempt in range(attempts):
            tcp = await trio.open_tcp_stream(*address)
            stream = SocketByteStream(tcp)
            try:
                with trio.fail_after(10):
                    receiver = BufferedReceiver(stream)
                    keys = await client_handshake(stream, receiver, new_identity(), peer_id, 10)
                    channel = FramedChannel(stream, receiver, keys.sender, keys.receiver, limits)
                    fields = {"max_frame": limits.max_frame}
                    hello = encode_message(Message("_hello", fields), Kind.CONTROL, 0)
                    await channel.send_message(hello.parts, hello.nbytes)
                    data = await channel.receive_message(10)
                    if data is None or decode_message(data, limits).type != "_hello":
                        raise ConnectionClosed("no _hello from the server")
                break
            except (ConnectionClosed, HandshakeError):
                await stream.aclose()
                if attempt == attempts - 1:
                    raise
        try:
            yield cls(tcp, channel, keys.sender, limits)
        finally:
            await stream.aclose()

    async def send_payload(self, payload: bytes) -> None:
        await self.channel.send_message([payload], len(payload))

    async def send_frame(self, payload: bytes, flags: int = 0) -> None:
        """One correctly sealed frame whose header word has `flags` (MORE, RESERVED) set."""
        word = (flags | (len(payload) + TAG_BYTES)).to_bytes(4, "big")
        frame = bytearray(payload) + bytearray(TAG_BYTES)
        self.sender.seal_in_place(memoryview(frame), len(payload), word)
        await self.tcp.send_all(word + frame)

    async def receive(self, timeout: float = 10) -> Message | None:
        """The next message from the server, or None once it closed the connection."""
        with trio.fail_after(timeout):
            data = await self.channel.receive_message(timeout)
        return None if data is None else decode_message(data, self.limits)
