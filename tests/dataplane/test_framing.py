"""Frames over in-memory streams: big messages span frames, and every frame-level defect
(oversize, reserved bits, short continuations, forgery, truncation) is fatal and named."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from plexus.p2p.dataplane.aead import TAG_BYTES, DirectionalCipher
from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.errors import ConnectionClosed, WireError
from plexus.p2p.dataplane.framing import MORE, RESERVED, FramedChannel
from plexus.p2p.dataplane.limits import Limits, MiB, PeerLimits
from plexus.p2p.dataplane.stream import BufferedReceiver, TrioByteStream


class Pair:
    """Two framed channels over one memory stream pair, plus raw access to side B's input."""

    def __init__(
        self,
        sender_limits: Limits | None = None,
        receiver_limits: Limits | None = None,
        *,
        lockstep: bool = False,
    ) -> None:
        make = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        self.raw_a, self.raw_b = make()
        a_to_b, b_to_a = os.urandom(32), os.urandom(32)
        stream_a, stream_b = TrioByteStream(self.raw_a), TrioByteStream(self.raw_b)
        self.a = FramedChannel(
            stream_a,
            BufferedReceiver(stream_a),
            DirectionalCipher(a_to_b),
            DirectionalCipher(b_to_a),
            sender_limits or Limits(),
        )
        self.b = FramedChannel(
            stream_b,
            BufferedReceiver(stream_b),
            DirectionalCipher(b_to_a),
            DirectionalCipher(a_to_b),
            receiver_limits or Limits(),
        )
        self.forger = DirectionalCipher(a_to_b)  # seals frames as A would, counter from 0

    async def send_raw_frame(self, payload: bytes, *, more: bool = False, extra: int = 0) -> None:
        word = (MORE if more else 0) | extra | (len(payload) + TAG_BYTES)
        header = word.to_bytes(4, "big")
        frame = bytearray(payload) + bytearray(TAG_BYTES)
        self.forger.seal_in_place(memoryview(frame), len(payload), header)
        await self.raw_a.send_all(header + frame)


async def exchange(pair: Pair, parts: list[bytes]) -> bytes:
    total = sum(len(part) for part in parts)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.a.send_message, parts, total)
        received = await pair.b.receive_message(10)
    assert received is not None
    return bytes(received)


async def test_small_message_round_trip() -> None:
    pair = Pair()
    assert await exchange(pair, [b"\x00\x00\x00\x02", b"{}"]) == b"\x00\x00\x00\x02{}"


async def test_parts_are_concatenated_across_frame_boundaries() -> None:
    pair = Pair(Limits(send_frame=64 * 1024))
    parts = [os.urandom(size) for size in (3, 70_000, 1, 65_536, 200_001, 0, 17)]
    assert await exchange(pair, parts) == b"".join(parts)


async def test_message_larger_than_a_frame_limit_spans_frames() -> None:
    size = 17 * MiB  # over the default 16 MiB frame limit
    pair = Pair(Limits(send_frame=16 * MiB))
    data = os.urandom(size)
    assert await exchange(pair, [data]) == data


async def test_peer_max_frame_caps_the_frame_size() -> None:
    pair = Pair(Limits(send_frame=4 * MiB), Limits(max_frame=128 * 1024, max_header=4096))
    pair.a.peer = PeerLimits(max_frame=128 * 1024)
    data = os.urandom(MiB)
    assert await exchange(pair, [data]) == data


async def expect_fatal(pair: Pair, code: int, text: str) -> None:
    with trio.fail_after(5), pytest.raises(WireError) as info:
        await pair.b.receive_message(5)
    assert info.value.fatal and info.value.code == code
    assert text in str(info.value)


async def test_declared_frame_over_the_limit_is_fatal_before_any_allocation() -> None:
    pair = Pair(receiver_limits=Limits(max_frame=MiB))
    await pair.raw_a.send_all((0x3FFFFFFF).to_bytes(4, "big"))  # ~1 GiB, no body follows
    await expect_fatal(pair, ErrorCode.TOO_LARGE, "exceeds the limit")


async def test_message_over_the_limit_across_frames_is_fatal() -> None:
    pair = Pair(Limits(send_frame=64 * 1024), Limits(max_message=200_000, max_header=4096))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.a.send_message, [bytes(300_000)], 300_000)
        await expect_fatal(pair, ErrorCode.TOO_LARGE, "announces 300000 bytes")
        nursery.cancel_scope.cancel()


def announced(total: int, size: int = 64 * 1024) -> bytes:
    """A first frame's plaintext: the announced message length, then payload."""
    return total.to_bytes(8, "big") + bytes(size - 8)


@pytest.mark.parametrize(
    ("total", "later", "text"),
    [
        (100_000, [(100_000, False)], "more or less"),  # frames carry more than announced
        (300_000, [(70_000, False)], "more or less"),  # ... or end early
        (1000, [(70_000, False)], "announces 1000"),  # announcement under the first frame
    ],
)
async def test_multi_frame_messages_must_match_their_announced_length(
    total: int, later: list[tuple[int, bool]], text: str
) -> None:
    pair = Pair()
    await pair.send_raw_frame(announced(total), more=True)
    for size, more in later:
        await pair.send_raw_frame(bytes(size), more=more)
    await expect_fatal(pair, ErrorCode.MALFORMED, text)


async def test_multi_frame_message_assembled_in_place() -> None:
    pair = Pair()
    first = announced(64 * 1024 - 8 + 100_000)
    await pair.send_raw_frame(first, more=True)
    await pair.send_raw_frame(b"\x01" * 100_000)
    data = await pair.b.receive_message(5)
    assert data is not None and len(data) == 64 * 1024 - 8 + 100_000
    assert bytes(data[-100_000:]) == b"\x01" * 100_000


async def test_short_continued_frame_is_fatal() -> None:
    pair = Pair()
    await pair.send_raw_frame(b"tiny", more=True)
    await expect_fatal(pair, ErrorCode.MALFORMED, "minimum")


async def test_reserved_bit_is_fatal() -> None:
    pair = Pair()
    await pair.send_raw_frame(b"\x00\x00\x00\x00", extra=RESERVED)
    await expect_fatal(pair, ErrorCode.MALFORMED, "reserved")


async def test_frame_shorter_than_its_tag_is_fatal() -> None:
    pair = Pair()
    await pair.raw_a.send_all((5).to_bytes(4, "big") + bytes(5))
    await expect_fatal(pair, ErrorCode.MALFORMED, "tag")


async def test_forged_or_garbage_frames_fail_authentication() -> None:
    pair = Pair()
    await pair.raw_a.send_all((100).to_bytes(4, "big") + os.urandom(100))
    await expect_fatal(pair, ErrorCode.MALFORMED, "authentication")


async def test_frame_with_a_modified_length_word_fails_authentication() -> None:
    pair = Pair()
    payload = os.urandom(100)
    word = (len(payload) + TAG_BYTES).to_bytes(4, "big")
    frame = bytearray(payload) + bytearray(TAG_BYTES)
    pair.forger.seal_in_place(memoryview(frame), len(payload), word)
    flagged = (int.from_bytes(word, "big") | MORE).to_bytes(4, "big")  # same length, MORE set
    await pair.raw_a.send_all(flagged + frame)
    with pytest.raises(WireError):  # too short for a continuation, or forged: fatal either way
        await pair.b.receive_message(5)


async def test_clean_close_between_messages_reads_as_none() -> None:
    pair = Pair()
    await pair.raw_a.aclose()
    assert await pair.b.receive_message(5) is None


@pytest.mark.parametrize("cut", [2, 4, 30])
async def test_close_inside_a_frame_is_a_truncation(cut: int) -> None:
    pair = Pair()
    word = (100 + TAG_BYTES).to_bytes(4, "big")
    await pair.raw_a.send_all((word + bytes(100 + TAG_BYTES))[:cut])
    await pair.raw_a.aclose()
    with pytest.raises(ConnectionClosed):
        await pair.b.receive_message(5)


async def test_overdue_reports_idle_at_a_boundary_and_stalled_inside_a_frame() -> None:
    pair = Pair()
    states: list[str | None] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.b.receive_message, 30)
        await trio.testing.wait_all_tasks_blocked()
        now = trio.current_time()
        states.append(pair.b.overdue(now))
        states.append(pair.b.overdue(now + 31))
        await pair.raw_a.send_all(b"\x00\x00")  # half a frame header
        await trio.testing.wait_all_tasks_blocked()
        states.append(pair.b.overdue(trio.current_time() + 31))
        nursery.cancel_scope.cancel()
    assert states == [None, "idle", "stalled"]


async def test_a_peer_that_stops_reading_breaks_the_channel_after_the_send_timeout() -> None:
    pair = Pair(Limits(send_timeout=0.2), lockstep=True)
    with trio.fail_after(5), pytest.raises(ConnectionClosed, match="stopped reading"):
        await pair.a.send_message([bytes(1000)], 1000)
    assert pair.a.broken is not None
    with pytest.raises(ConnectionClosed):
        await pair.a.send_message([b"more"], 4)
