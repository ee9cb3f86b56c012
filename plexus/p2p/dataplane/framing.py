"""Encrypted frames carrying whole messages (docs/protocol-dataplane.md, "Frames").

Frame = 4-byte big-endian word | ChaCha20-Poly1305 ciphertext of the payload | 16-byte tag.
The word holds MORE (bit 31: further frames of this message follow), a reserved bit (30,
zero) and the ciphertext length including the tag (bits 0-29); it is the AEAD's associated
data, so flags and length are authenticated too. A frame with MORE carries at least 64 KiB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import trio

from plexus.p2p.dataplane.aead import TAG_BYTES, DirectionalCipher
from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.errors import ConnectionClosed, WireError
from plexus.p2p.dataplane.limits import MIN_CONTINUED_FRAME, Limits, PeerLimits
from plexus.p2p.dataplane.stream import Buffer, BufferedReceiver, ByteStream

MORE = 1 << 31
RESERVED = 1 << 30
LENGTH_MASK = RESERVED - 1
HEADER_BYTES = 4
_SCRATCH_BYTES = 64 * 1024  # frames up to this size reuse one buffer per connection


class FramedChannel:
    """Sends and receives whole messages as sequences of encrypted frames.

    Sending is serialised by a lock (frames of different messages never interleave); once
    a message's first byte is out, the rest is shielded from the caller's cancellation
    (the only waits are shielded), since a half-sent message would corrupt the stream.
    Each frame must reach the kernel within `send_timeout` or the channel closes.
    Only one task may receive.
    """

    def __init__(
        self,
        stream: ByteStream,
        receiver: BufferedReceiver,
        sender_cipher: DirectionalCipher,
        receiver_cipher: DirectionalCipher,
        limits: Limits,
    ) -> None:
        self._stream = stream
        self._receiver = receiver
        self._seal = sender_cipher
        self._open = receiver_cipher
        self.limits = limits
        self.peer = PeerLimits()
        self._send_lock = trio.Lock()
        self._scratch = bytearray(_SCRATCH_BYTES + HEADER_BYTES + TAG_BYTES)
        self._broken: str | None = None
        self._at_boundary = False

    @property
    def broken(self) -> str | None:
        """Why the channel can no longer be used, or None while it is healthy."""
        return self._broken

    async def aclose(self, reason: str = "closed") -> None:
        if self._broken is None:
            self._broken = reason
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    # --- sending -------------------------------------------------------------------------

    async def send_message(self, parts: Sequence[Buffer], total: int) -> None:
        """Send the concatenation of `parts` (`total` bytes) as one message."""
        if self._broken is not None:
            raise ConnectionClosed(f"connection is closed ({self._broken})")
        frame_size = min(self.limits.send_frame, self.peer.max_frame)
        frames = max(1, math.ceil(total / frame_size))
        if self._send_lock.locked():
            await self._send_lock.acquire()
        else:
            self._send_lock.acquire_nowait()  # the common case costs no scheduler pass
        try:
            buffer = self._scratch
            if min(total, frame_size) > _SCRATCH_BYTES:
                buffer = bytearray(min(total, frame_size) + HEADER_BYTES + TAG_BYTES)
            view = memoryview(buffer)
            source = _Concatenation(parts)
            for index in range(frames):
                chunk = min(frame_size, total - index * frame_size)
                await self._send_frame(view, source, chunk, more=index < frames - 1)
        finally:
            self._send_lock.release()

    async def _send_frame(
        self, view: memoryview, source: _Concatenation, chunk: int, more: bool
    ) -> None:
        word = (MORE if more else 0) | (chunk + TAG_BYTES)
        header = word.to_bytes(HEADER_BYTES, "big")
        view[:HEADER_BYTES] = header
        source.copy_into(view[HEADER_BYTES : HEADER_BYTES + chunk])
        end = HEADER_BYTES + chunk + TAG_BYTES
        self._seal.seal_in_place(view[HEADER_BYTES:end], chunk, header)
        if self._broken is not None:
            raise ConnectionClosed(f"connection is closed ({self._broken})")
        try:
            sent = self._stream.send_nowait(view[:end])
            if sent == end:
                return
            # A half-sent frame would corrupt the stream: the rest goes out whatever the
            # caller's cancel scopes say, or the connection closes after send_timeout.
            with trio.CancelScope(shield=True), trio.fail_after(self.limits.send_timeout):
                await self._stream.send_all(view[sent:end])
        except trio.TooSlowError:
            await self.aclose("peer stopped reading (send timeout)")
            raise ConnectionClosed("peer stopped reading (send timeout)") from None
        except ConnectionClosed:
            await self.aclose("send failed")
            raise

    # --- receiving -----------------------------------------------------------------------

    async def receive_message(self, idle_timeout: float) -> memoryview | None:
        """The next whole message's plaintext, or None if the peer closed between messages.

        A message is due to start within `idle_timeout` and each further piece within
        `limits.read_timeout`; see `overdue` for how these are enforced. Problems with the
        frames themselves raise a fatal WireError: the stream cannot be resynchronised.
        """
        header = bytearray(HEADER_BYTES)
        header_view = memoryview(header)
        chunks: list[memoryview] = []
        total = 0
        while True:
            first = not chunks
            self._at_boundary = first
            wait = idle_timeout if first else self.limits.read_timeout
            try:
                if not await self._receiver.read_exactly(header_view, wait, eof_ok=first):
                    return None
            finally:
                self._at_boundary = False
            word = int.from_bytes(header, "big")
            more = bool(word & MORE)
            length = word & LENGTH_MASK
            plain = length - TAG_BYTES
            self._check_frame(word, plain, total, more)
            frame = bytearray(length)
            frame_view = memoryview(frame)
            await self._receiver.read_exactly(frame_view, self.limits.read_timeout)
            self._open.open_in_place(frame_view, bytes(header))
            payload = frame_view[:plain]
            if not more and not chunks:
                return payload
            chunks.append(payload)
            total += plain
            if not more:
                return memoryview(bytearray().join(chunks))

    def overdue(self, now: float) -> str | None:
        """Whether the receiving side waits past its deadline: None, "idle" (waiting for a
        new message, nothing consumed: safe to keep waiting) or "stalled" (inside one)."""
        if now < self._receiver.deadline:
            return None
        if self._at_boundary and self._receiver.progress == 0:
            return "idle"
        return "stalled"

    def extend_wait(self, now: float, seconds: float) -> None:
        """Push the current wait's deadline to `now + seconds`."""
        self._receiver.deadline = now + seconds

    def _check_frame(self, word: int, plain: int, total: int, more: bool) -> None:
        if word & RESERVED:
            raise WireError("frame header has the reserved bit set", fatal=True)
        if plain < 0:
            raise WireError("frame shorter than its tag", fatal=True)
        if plain > self.limits.max_frame:
            raise WireError(
                f"frame of {plain} bytes exceeds the limit of {self.limits.max_frame}",
                ErrorCode.TOO_LARGE,
                fatal=True,
            )
        if total + plain > self.limits.max_message:
            raise WireError(
                f"message exceeds the limit of {self.limits.max_message} bytes",
                ErrorCode.TOO_LARGE,
                fatal=True,
            )
        if more and plain < MIN_CONTINUED_FRAME:
            raise WireError(
                f"continued frame of {plain} bytes is under the {MIN_CONTINUED_FRAME} minimum",
                fatal=True,
            )


class _Concatenation:
    """Copies consecutive slices of a list of buffers, as if they were one buffer."""

    def __init__(self, parts: Sequence[Buffer]) -> None:
        self._parts = [memoryview(part).cast("B") for part in parts if len(part)]
        self._index = 0
        self._offset = 0

    def copy_into(self, dest: memoryview) -> None:
        filled = 0
        wanted = len(dest)
        while filled < wanted:
            part = self._parts[self._index]
            take = min(len(part) - self._offset, wanted - filled)
            dest[filled : filled + take] = part[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset == len(part):
                self._index += 1
                self._offset = 0
