"""Acceptance: a server process under 10,000+ malformed frames keeps serving and stays small.

Against `python -m plexus.p2p.dataplane._echo_server` on 127.0.0.1 this sends
  * 10,000 malformed messages inside valid frames over 20 authenticated connections (random
    bytes, bad lengths, bad JSON, bad ids/kinds/types, wrong dtype/shape/nbytes headers,
    bad bool bytes, unknown compression, unknown types, bad handler arguments); each must be
    answered by exactly one `_error` with the right code (and request id when it had one),
    the connection staying open;
  * ~300 connections with frame-level attacks (garbage before or instead of the handshake,
    wrong version, forged or oversized or reserved-bit or short-continuation frames, frames
    cut short): each is answered with an error or closed;
  * handshakes that never finish, frames that stall half-way, and peers that stop reading
    while their replies pile up: each is dropped within its timeout;
while a well-behaved client checks an echo round trip every 20 ms, and the server's RSS
(from /proc/<pid>/status) is compared before and after.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
import torch
import trio

from plexus.p2p.dataplane import ErrorCode, Message, connect
from plexus.p2p.dataplane.errors import ConnectionClosed, WireError
from plexus.p2p.dataplane.framing import MORE, RESERVED
from plexus.p2p.dataplane.handshake import MAGIC, MSG1_BYTES, PREFIX
from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.message import Kind, encode_message
from tests.dataplane.helpers import RawClient, ServerProcess, echo_server, new_identity, rss_kib

pytestmark = pytest.mark.slow

SERVER_ARGS = (
    "--handshake-timeout", "2", "--read-timeout", "1", "--send-timeout", "2",
    "--idle-timeout", "30", "--max-in-flight", "64",
)  # fmt: skip
HEADER_CONNECTIONS = 20
PER_CONNECTION = 500
RSS_GROWTH_LIMIT_KIB = 32 * 1024  # after the attack (and a heap trim): nothing retained
PEAK_GROWTH_LIMIT_KIB = 400 * 1024  # during it: 3 non-readers x max_buffered (64 MiB) + slack
MAX_HEADER = Limits().max_header

MALFORMED, TOO_LARGE, BAD_TENSOR = ErrorCode.MALFORMED, ErrorCode.TOO_LARGE, ErrorCode.BAD_TENSOR
UNKNOWN, BUSY, INVALID = ErrorCode.UNKNOWN_TYPE, ErrorCode.BUSY, ErrorCode.INVALID_REQUEST


@dataclass
class Bad:
    """A malformed message, the request id its error must carry, and the acceptable codes."""

    payload: bytes
    request_id: int
    codes: frozenset[int]


def message_bytes(header: object, body: bytes = b"", *, text: bytes | None = None) -> bytes:
    raw = text if text is not None else json.dumps(header).encode()
    head = len(raw).to_bytes(4, "big") + raw
    return head + bytes((-len(head)) % 64) + body if body else head


def malformed(rng: random.Random, n: int) -> Bad:
    """One of 26 kinds of malformed message with request id `n`, chosen at random."""
    f32 = {"dtype": "float32", "shape": [2, 3], "nbytes": 24}
    one = message_bytes

    def tensors(*descriptors: object, body: bytes = bytes(24)) -> bytes:
        return one({"k": 0, "t": "echo", "id": n, "x": list(descriptors)}, body)

    def header(**fields: object) -> bytes:
        return one({"k": 0, "t": "echo", "id": n, **fields})

    kind = rng.randrange(26)
    if kind == 0:
        data = rng.randbytes(rng.randrange(0, 300))
        too_large = len(data) >= 4 and int.from_bytes(data[:4], "big") > MAX_HEADER
        return Bad(data, 0, frozenset({TOO_LARGE if too_large else MALFORMED}))
    anonymous: dict[int, tuple[bytes, int]] = {
        1: ((MAX_HEADER + 1 + rng.randrange(1 << 20)).to_bytes(4, "big") + b"{}", TOO_LARGE),
        2: (one(None, text=b'{"k":0,"t":"echo","id":' + rng.randbytes(8)), MALFORMED),
        3: (one([n, "echo"]), MALFORMED),
        4: (one(None, text=b"[" * 5000 + b"]" * 5000), MALFORMED),
        5: (one(None, text=b'{"t":"\xff\xfe"}'), MALFORMED),
        6: (one(None, text=b'{"k":0,"t":"echo","id":NaN}'), MALFORMED),
        7: (header(id=rng.choice(["7", -5, True, 1.5, 1 << 60, None])), MALFORMED),
    }
    if kind in anonymous:
        payload, code = anonymous[kind]
        return Bad(payload, 0, frozenset({code}))
    shape = rng.choice([[2, -3], [2, 3.0], [True, 3], "2x3", [1] * 9, [[2], 3]])
    dtype = rng.choice(["float64", "complex128", "object", "pickle", 5, None])
    comp = rng.choice([{"comp": "zstd"}, {"dtype": "int32", "comp": "int8_block64"}])
    huge = {"dtype": "float32", "shape": [1 << 20, 1 << 20], "nbytes": 4 << 40}
    flags = {"dtype": "bool", "shape": [8], "nbytes": 8}
    identified: dict[int, tuple[bytes, frozenset[int]]] = {
        8: (header(k=rng.choice([5, 99, -1, "0", [0]])), frozenset({UNKNOWN})),
        9: (header(t=rng.choice([5, "", "x" * 80])), frozenset({MALFORMED})),
        10: (header(f=[1, 2]), frozenset({MALFORMED})),
        11: (header(x={"a": 1}), frozenset({MALFORMED})),
        12: (tensors(*[f32] * 65, body=bytes(24 * 65)), frozenset({TOO_LARGE})),
        13: (tensors({**f32, "dtype": dtype}), frozenset({BAD_TENSOR})),
        14: (tensors({**f32, "nbytes": rng.choice([0, 23, 25, 48])}), frozenset({BAD_TENSOR})),
        15: (tensors({**f32, "shape": shape}), frozenset({BAD_TENSOR})),
        16: (tensors(huge), frozenset({TOO_LARGE})),
        17: (tensors(f32, body=bytes(rng.choice([1, 23, 25, 88, 1000]))), frozenset({BAD_TENSOR})),
        18: (tensors(flags, body=bytes([0, 1, 2, 0, 1, 0, 0, 255])), frozenset({BAD_TENSOR})),
        19: (tensors({**f32, **comp}), frozenset({BAD_TENSOR})),
        20: (header(k=4, t="_hello"), frozenset({MALFORMED})),
        21: (header(t="_secret"), frozenset({UNKNOWN})),
        22: (header(t="no_such_type"), frozenset({UNKNOWN, BUSY})),
        23: (header(t="add", f={"value": "abc"}), frozenset({INVALID, BUSY})),
        # a one-way message whose handler fails is reported back with its id
        24: (header(k=3, t="sleep", f={"seconds": [1]}), frozenset({INVALID, BUSY})),
        25: (tensors(f32, body=bytes(24 + 7)), frozenset({BAD_TENSOR})),
    }
    payload, codes = identified[kind]
    return Bad(payload, n, codes)


@dataclass
class Tally:
    answered: int = 0
    closed: int = 0
    sent: int = 0
    problems: list[str] = field(default_factory=list)


async def header_attack(server: ServerProcess, seed: int, count: int, tally: Tally) -> None:
    """Pipeline `count` malformed messages on one connection; check every answer."""
    rng = random.Random(seed)
    bads = [malformed(rng, seed * 100_000 + index + 1) for index in range(count)]
    expected_ids = {bad.request_id: bad.codes for bad in bads if bad.request_id}
    expected_anonymous = Counter(code for bad in bads if not bad.request_id for code in bad.codes)
    anonymous: Counter[int] = Counter()
    async with RawClient.connect(server.address, server.peer_id) as raw:

        async def send_all() -> None:
            for bad in bads:
                await raw.send_payload(bad.payload)
                tally.sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            for _ in range(count):
                reply = await raw.receive(timeout=20)
                if reply is None:
                    tally.problems.append(
                        f"connection {seed} closed after {tally.answered} answers"
                    )
                    return
                code = reply.fields.get("code")
                if reply.kind != Kind.ERROR or not reply.fields.get("message"):
                    tally.problems.append(f"not a clear error: {reply}")
                elif reply.request_id == 0:
                    anonymous[code] += 1
                elif code not in expected_ids.pop(reply.request_id, frozenset()):
                    tally.problems.append(f"id {reply.request_id}: unexpected code {code}")
                tally.answered += 1
        assert await raw.channel.send_message([b""], 0) is None or True  # connection still open
    if expected_ids:
        tally.problems.append(f"{len(expected_ids)} messages were never answered")
    if anonymous != expected_anonymous:
        tally.problems.append(f"errors without id: {anonymous} != {expected_anonymous}")


async def expect_error_then_close(raw: RawClient, code: int, tally: Tally) -> None:
    reply = await raw.receive(timeout=5)
    if reply is None or reply.kind != Kind.ERROR or reply.fields.get("code") != code:
        tally.problems.append(f"expected error {code} before the close, got {reply}")
    try:
        if await raw.receive(timeout=5) is not None:
            tally.problems.append("server kept the connection open after a fatal frame")
    except (ConnectionClosed, WireError):
        pass
    tally.answered += 1
    tally.closed += 1


async def closes_within(stream: trio.SocketStream, seconds: float, tally: Tally, what: str) -> None:
    try:
        with trio.fail_after(seconds):
            while await stream.receive_some(65536):
                pass
    except trio.TooSlowError:
        tally.problems.append(f"{what}: not closed within {seconds} s")
    except trio.BrokenResourceError:
        pass
    tally.closed += 1


async def frame_attack(server: ServerProcess, rng: random.Random, kind: int, tally: Tally) -> None:
    """One connection, one frame-level attack; the server must answer or close."""
    tally.sent += 1
    if kind <= 2:  # before or instead of a proper handshake
        stream = await trio.open_tcp_stream(*server.address)
        async with stream:
            if kind == 0:
                await stream.send_all(rng.randbytes(rng.randrange(1, 200)))
            elif kind == 1:
                await stream.send_all(PREFIX.pack(MAGIC, 1, 0, 0) + os.urandom(MSG1_BYTES - 8))
                await stream.receive_some(200)
                await stream.send_all(os.urandom(96))  # garbage identity and signature
            else:
                await stream.send_all(PREFIX.pack(MAGIC, 7, 0, 0) + bytes(64))
            await closes_within(stream, 5, tally, f"pre-handshake attack {kind}")
        return
    async with RawClient.connect(server.address, server.peer_id) as raw:
        if kind == 3:
            await raw.tcp.send_all((0x3FFFFFFF).to_bytes(4, "big"))
            await expect_error_then_close(raw, TOO_LARGE, tally)
        elif kind == 4:
            size = rng.randrange(16, 5000)
            await raw.tcp.send_all(size.to_bytes(4, "big") + os.urandom(size))
            await expect_error_then_close(raw, MALFORMED, tally)
        elif kind == 5:
            await raw.send_frame(b"\x00\x00\x00\x02{}", RESERVED)
            await expect_error_then_close(raw, MALFORMED, tally)
        elif kind == 6:
            await raw.send_frame(b"\x00\x00\x00\x02{}", MORE)
            await expect_error_then_close(raw, MALFORMED, tally)
        elif kind == 7:
            await raw.tcp.send_all(rng.randrange(0, 16).to_bytes(4, "big") + bytes(16))
            await expect_error_then_close(raw, MALFORMED, tally)
        else:  # a frame cut short, then the end of the stream
            await raw.tcp.send_all((500).to_bytes(4, "big") + os.urandom(100))
            await raw.tcp.send_eof()
            await closes_within(raw.tcp, 5, tally, "truncated frame")


async def stalled_handshake(server: ServerProcess, partial: bytes, tally: Tally) -> None:
    stream = await trio.open_tcp_stream(*server.address)
    async with stream:
        await stream.send_all(partial)
        await closes_within(stream, 4.5, tally, "stalled handshake")  # handshake timeout 2 s
    tally.sent += 1


async def stalled_frame(server: ServerProcess, tally: Tally) -> None:
    async with RawClient.connect(server.address, server.peer_id) as raw:
        await raw.tcp.send_all((4000).to_bytes(4, "big") + b"half a frame")
        await closes_within(raw.tcp, 4.0, tally, "stalled frame")  # read timeout 1 s
    tally.sent += 1


async def non_reader(server: ServerProcess, tally: Tally) -> None:
    """Pipeline requests with 1 MiB replies and never read them."""
    big = torch.zeros(256 * 1024)
    async with RawClient.connect(server.address, server.peer_id, Limits(send_timeout=20)) as raw:
        start = trio.current_time()
        try:
            with trio.fail_after(15):
                for index in range(10_000):
                    encoded = encode_message(Message("echo", {}, [big]), Kind.REQUEST, index + 1)
                    await raw.channel.send_message(encoded.parts, encoded.nbytes)
                    tally.sent += 1
                    await trio.sleep(0.002)
        except ConnectionClosed:
            tally.closed += 1
        except trio.TooSlowError:
            tally.problems.append("a peer that stopped reading was never dropped")
        if trio.current_time() - start > 12:
            tally.problems.append("dropping a peer that stopped reading took over 12 s")


@dataclass
class GoodClient:
    round_trips: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    stop: trio.Event = field(default_factory=trio.Event)

    async def run(self, server: ServerProcess) -> None:
        hidden = torch.randn(1, 1, 2048).half()
        async with connect(new_identity(), server.address, server.peer_id) as conn:
            while not self.stop.is_set():
                start = trio.current_time()
                try:
                    reply = await conn.request(
                        Message("echo", {"n": self.round_trips}, [hidden]), timeout=5
                    )
                    if reply.fields != {"n": self.round_trips} or not torch.equal(
                        reply.tensors[0], hidden
                    ):
                        self.failures.append(f"wrong echo at {self.round_trips}")
                except Exception as exc:  # record, keep checking
                    self.failures.append(repr(exc))
                self.slowest = max(self.slowest, trio.current_time() - start)
                self.round_trips += 1
                with trio.move_on_after(0.02):
                    await self.stop.wait()


def peak_rss_kib(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


async def settle(server: ServerProcess, sockets: int) -> int:
    """Wait until the server holds `sockets` connections; return its RSS in KiB."""
    async with connect(new_identity(), server.address, server.peer_id) as conn:
        with trio.fail_after(20):
            while True:
                stats = (await conn.request(Message("stats", {"trim": True}), timeout=5)).fields
                if stats["sockets"] <= sockets + 1:  # + this stats connection
                    break
                await trio.sleep(0.1)
    return rss_kib(server.pid)


async def attack(
    server: ServerProcess, tally: Tally, *, header_connections: int, scale: int
) -> None:
    """Every attack at once; `scale` 0 runs each kind once (a warm-up), 4 the full test."""
    limiter = trio.CapacityLimiter(40)

    async def limited(fn, *args) -> None:
        async with limiter:
            await fn(*args)

    async with trio.open_nursery() as nursery:
        for index in range(header_connections):
            nursery.start_soon(
                limited, header_attack, server, scale * 1000 + index, PER_CONNECTION, tally
            )
        for index in range(9 * 33 * scale // 4 + 9):
            nursery.start_soon(
                limited, frame_attack, server, random.Random(index), index % 9, tally
            )
        for index in range(30 * scale // 4 + 2):
            partial = [b"", b"PX", PREFIX.pack(MAGIC, 1, 0, 0) + bytes(20)][index % 3]
            nursery.start_soon(stalled_handshake, server, partial, tally)
        for _ in range(10 * scale // 4 + 1):
            nursery.start_soon(stalled_frame, server, tally)
        for _ in range(scale // 2 + 1):
            nursery.start_soon(non_reader, server, tally)


async def test_server_survives_hostile_input_with_bounded_memory() -> None:
    with echo_server(*SERVER_ARGS) as server:
        good = GoodClient()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(good.run, server)
            warmup = Tally()
            await attack(server, warmup, header_connections=1, scale=0)  # every kind once
            assert not warmup.problems, warmup.problems[:10]
            baseline = await settle(server, sockets=1)

            tally = Tally()
            with trio.fail_after(120):
                await attack(server, tally, header_connections=HEADER_CONNECTIONS, scale=4)
            final = await settle(server, sockets=1)
            peak = peak_rss_kib(server.pid)
            good.stop.set()

        assert not tally.problems, tally.problems[:10]
        assert tally.answered >= HEADER_CONNECTIONS * PER_CONNECTION
        assert tally.sent >= 10_000
        assert not good.failures, good.failures[:5]
        assert good.round_trips >= 20
        growth = final - baseline
        print(
            f"\nhostile: {tally.sent} malformed frames/connections sent, "
            f"{tally.answered} answered, "
            f"{tally.closed} connections closed; good client {good.round_trips} round trips, "
            f"slowest {good.slowest * 1e3:.0f} ms; server RSS {baseline} -> {final} KiB "
            f"(peak {peak} KiB)"
        )
        assert growth < RSS_GROWTH_LIMIT_KIB, f"server RSS grew by {growth} KiB"
        assert peak - baseline < PEAK_GROWTH_LIMIT_KIB, (
            f"server RSS peaked {peak - baseline} KiB up"
        )
