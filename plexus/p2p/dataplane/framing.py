"""Encrypted frames carrying whole messages (docs/protocol.md, Part 2, "Frames").

Frame = 4-byte big-endian word | ChaCha20-Poly1305 ciphertext of the payload | 16-byte tag.
The word holds MORE (bit 31: further frames of this message follow), a reserved bit (30,
zero) and the ciphertext length including the tag (bits 0-29); it is the AEAD's associated
data, so flags and length are authenticated too. A frame with MORE carries at least 64 KiB.
A message in one frame is that frame's plaintext. A message in several frames announces its
length: the first frame's plaintext starts with it (8 bytes, big-endian), so the receiver
allocates the message once and decrypts every later frame in place where it belongs.
"""

from __future__ import annotations

import random
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
LENGTH_PREFIX_BYTES = 8
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
        self._emulated_due = 0.0  # latency emulation: when the last message may leave
        self._emulated_tickets = 0  # latency emulation: messages leave in ticket order
        self._emulated_turn = 0
        self._emulated_turn_changed = trio.Event()
        self._emulated_abandoned: set[int] = set()
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
        if self.limits.emulated_delay or self.limits.emulated_jitter:
            await self._emulate_latency()
        if self._send_lock.locked():
            await self._send_lock.acquire()
        else:
            self._send_lock.acquire_nowait()  # the common case costs no scheduler pass
        try:
            needed = HEADER_BYTES + min(total, frame_size) + TAG_BYTES
            buffer = self._scratch if needed <= len(self._scratch) else bytearray(needed)
            if total <= frame_size:  # one frame: the parts copied straight into it
                view = memoryview(buffer)
                offset = HEADER_BYTES
                for part in parts:
                    end = offset + _nbytes(part)
                    view[offset:end] = part
                    offset = end
                if offset != HEADER_BYTES + total:
                    raise ValueError(f"parts of {offset - HEADER_BYTES} bytes, not {total}")
                await self._send_sealed(view, total, more=False)
                return
            source = _Concatenation(parts)
            # A multi-frame message announces its size first, so the receiver can
            # assemble it in place in one buffer.
            prefix = total.to_bytes(LENGTH_PREFIX_BYTES, "big")
            remaining = total
            chunk = frame_size - LENGTH_PREFIX_BYTES
            while remaining:
                chunk = min(chunk, remaining)
                remaining -= chunk
                await self._send_frame(buffer, source, chunk, prefix, more=remaining > 0)
                prefix, chunk = b"", frame_size
        finally:
            self._send_lock.release()

    async def _emulate_latency(self) -> None:
        """Hold this message back by the emulated one-way delay, keeping send order."""
        ticket = self._emulated_tickets
        self._emulated_tickets += 1
        jitter = random.uniform(0.0, self.limits.emulated_jitter)
        due = max(trio.current_time() + self.limits.emulated_delay + jitter, self._emulated_due)
        self._emulated_due = due
        try:
            await trio.sleep_until(due)
            while self._emulated_turn != ticket:
                await self._emulated_turn_changed.wait()
        except BaseException:  # cancelled: never block the tickets behind this one
            self._emulated_abandoned.add(ticket)
            if self._emulated_turn == ticket:
                self._next_turn()
            raise
        # The send lock is FIFO, so handing the turn on before sending keeps the order.
        self._next_turn()

    def _next_turn(self) -> None:
        self._emulated_turn += 1
        while self._emulated_turn in self._emulated_abandoned:
            self._emulated_abandoned.remove(self._emulated_turn)
            self._emulated_turn += 1
        self._emulated_turn_changed.set()
        self._emulated_turn_changed = trio.Event()

    async def _send_frame(
        self, buffer: bytearray, source: _Concatenation, chunk: int, prefix: bytes, more: bool
    ) -> None:
        plain = len(prefix) + chunk
        view = memoryview(buffer)
        contiguous = None if prefix else source.take_contiguous(chunk)
        if contiguous is None:
            view[HEADER_BYTES : HEADER_BYTES + len(prefix)] = prefix
            source.copy_into(view[HEADER_BYTES + len(prefix) : HEADER_BYTES + plain])
            await self._send_sealed(view, plain, more)
            return
        # Encrypt straight from the tensor's memory.
        view = view[: HEADER_BYTES + plain + TAG_BYTES]
        header = _header(plain, more)
        view[:HEADER_BYTES] = header
        self._seal.seal_into(view[HEADER_BYTES:], contiguous, header)
        await self._write_frame(view)

    async def _send_sealed(self, frame: memoryview, plain: int, more: bool) -> None:
        """Seal and send the frame whose plaintext is already in `frame[4:4 + plain]`."""
        view = frame[: HEADER_BYTES + plain + TAG_BYTES]
        header = _header(plain, more)
        view[:HEADER_BYTES] = header
        self._seal.seal_in_place(view[HEADER_BYTES:], plain, header)
        await self._write_frame(view)

    async def _write_frame(self, view: memoryview) -> None:
        end = len(view)
        if self._broken is not None:
            raise ConnectionClosed(f"connection is closed ({self._broken})")
        try:
            sent = self._stream.send_nowait(view)
            if sent == end:
                return
            # A half-sent frame would corrupt the stream: the rest goes out whatever the
            # caller's cancel scopes say, or the connection closes after send_timeout.
            with trio.CancelScope(shield=True), trio.fail_after(self.limits.send_timeout):
                await self._stream.send_all(view[sent:])
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
        self._at_boundary = True
        try:
            header = await self._read_header(idle_timeout, eof_ok=True)
        finally:
            self._at_boundary = False
        if header is None:
            return None
        word, more, plain = header
        self._check_frame(word, plain, more)
        if plain > self.limits.max_message:
            raise WireError(
                f"message exceeds the limit of {self.limits.max_message} bytes",
                ErrorCode.TOO_LARGE,
                fatal=True,
            )
        frame = bytearray(plain + TAG_BYTES)
        await self._read_frame(memoryview(frame), word)
        if not more:
            return memoryview(frame)[:plain]
        total = int.from_bytes(frame[:LENGTH_PREFIX_BYTES], "big")
        first = plain - LENGTH_PREFIX_BYTES
        if not first < total <= self.limits.max_message:
            code = ErrorCode.TOO_LARGE if total > self.limits.max_message else ErrorCode.MALFORMED
            raise WireError(f"multi-frame message announces {total} bytes", code, fatal=True)
        message = bytearray(total + TAG_BYTES)  # room for the last frame's tag
        view = memoryview(message)
        view[:first] = memoryview(frame)[LENGTH_PREFIX_BYTES:plain]
        del frame
        filled = first
        while more:
            header = await self._read_header(self.limits.read_timeout, eof_ok=False)
            assert header is not None
            word, more, plain = header
            self._check_frame(word, plain, more)
            if filled + plain > total or (not more and filled + plain != total):
                raise WireError(
                    f"frames carry more or less than the announced {total} bytes", fatal=True
                )
            # Ciphertext lands where its plaintext belongs; its tag is overwritten next.
            await self._read_frame(view[filled : filled + plain + TAG_BYTES], word)
            filled += plain
        return view[:total]

    async def _read_header(self, timeout: float, *, eof_ok: bool) -> tuple[int, bool, int] | None:
        header = bytearray(HEADER_BYTES)
        if not await self._receiver.read_exactly(memoryview(header), timeout, eof_ok=eof_ok):
            return None
        word = int.from_bytes(header, "big")
        return word, bool(word & MORE), (word & LENGTH_MASK) - TAG_BYTES

    async def _read_frame(self, frame: memoryview, word: int) -> None:
        await self._receiver.read_exactly(frame, self.limits.read_timeout)
        self._open.open_in_place(frame, word.to_bytes(HEADER_BYTES, "big"))

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

    def _check_frame(self, word: int, plain: int, more: bool) -> None:
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
        if more and plain < MIN_CONTINUED_FRAME:
            raise WireError(
                f"continued frame of {plain} bytes is under the {MIN_CONTINUED_FRAME} minimum",
                fatal=True,
            )


def _header(plain: int, more: bool) -> bytes:
    return ((MORE if more else 0) | (plain + TAG_BYTES)).to_bytes(HEADER_BYTES, "big")


def _nbytes(part: Buffer) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


class _Concatenation:
    """Copies consecutive slices of a list of buffers, as if they were one buffer."""

    def __init__(self, parts: Sequence[Buffer]) -> None:
        self._parts = [memoryview(part).cast("B") for part in parts if len(part)]
        self._index = 0
        self._offset = 0

    def take_contiguous(self, count: int) -> memoryview | None:
        """The next `count` bytes if they lie in one part (consuming them), else None."""
        if self._index >= len(self._parts):
            return None if count else memoryview(b"")
        part = self._parts[self._index]
        if len(part) - self._offset < count:
            return None
        view = part[self._offset : self._offset + count]
        self._offset += count
        if self._offset == len(part):
            self._index += 1
            self._offset = 0
        return view

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
