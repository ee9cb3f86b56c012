"""Every size and time limit of the data plane in one place (docs/protocol.md, Part 2)."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB

MIN_CONTINUED_FRAME = 64 * KiB
"""Protocol rule: a frame with the MORE flag carries at least this much plaintext."""
PROTOCOL_MAX_FRAME = (1 << 30) - 1 - 16
"""The largest plaintext a frame header can describe (30-bit length minus the tag)."""


@dataclass(frozen=True)
class Limits:
    """Limits one side enforces on what it receives, and timeouts on its waits.

    Sizes are plaintext bytes. The receive-size limits are announced to the peer in the
    `_hello` message, and a sender never exceeds the peer's announced values.
    """

    max_frame: int = 16 * MiB
    """Largest frame plaintext accepted."""
    send_frame: int = 1 * MiB
    """Frame size this side sends (capped by the peer's `max_frame`); smaller frames let
    encryption, transfer and decryption overlap for large messages."""
    max_message: int = 256 * MiB
    """Largest message (header + tensor data) accepted."""
    max_header: int = 64 * KiB
    """Largest JSON header accepted."""
    max_tensors: int = 64
    max_rank: int = 8
    max_elements: int = 1 << 31
    """Largest element count of one tensor (after decompression)."""
    max_in_flight: int = 64
    """Requests from the peer being handled at once; more are answered BUSY."""
    max_buffered: int = 64 * MiB
    """Bytes of received requests held by running handlers before reading pauses."""
    max_connections: int = 512
    """Connections a server holds at once (including ones still in the handshake)."""
    handshake_timeout: float = 5.0
    """Whole handshake, from TCP accept/connect to the peer's `_hello`."""
    idle_timeout: float = 300.0
    """Close a connection that received nothing for this long (the peer may `ping`)."""
    read_timeout: float = 30.0
    """Longest wait for more bytes of a frame that has started."""
    send_timeout: float = 30.0
    """Longest time one frame may take to hand to the kernel; the connection closes after."""
    handler_timeout: float | None = None
    """Longest a handler may run before the request is answered TIMEOUT (None: no limit)."""
    emulated_delay: float = 0.0
    """TESTING ONLY: hold every message this side sends for this many seconds (one-way
    network latency emulation, since netem is not available everywhere). Off (0) by default."""
    emulated_jitter: float = 0.0
    """TESTING ONLY: add a uniform random 0..jitter seconds to `emulated_delay`; messages
    still leave in the order they were sent."""

    def __post_init__(self) -> None:
        if not MIN_CONTINUED_FRAME <= self.max_frame <= PROTOCOL_MAX_FRAME:
            raise ValueError(f"max_frame must be in [{MIN_CONTINUED_FRAME}, {PROTOCOL_MAX_FRAME}]")
        if not MIN_CONTINUED_FRAME <= self.send_frame <= PROTOCOL_MAX_FRAME:
            raise ValueError(f"send_frame must be in [{MIN_CONTINUED_FRAME}, {PROTOCOL_MAX_FRAME}]")
        if self.max_header < 256 or self.max_header > self.max_frame:
            raise ValueError("max_header must be in [256, max_frame]")
        if self.max_message < self.max_header + 4:
            raise ValueError("max_message must exceed max_header")
        for name in ("max_tensors", "max_rank", "max_elements", "max_in_flight", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        for name in ("handshake_timeout", "idle_timeout", "read_timeout", "send_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not (0 <= self.emulated_delay <= 10 and 0 <= self.emulated_jitter <= 10):
            raise ValueError("emulated delay and jitter must be between 0 and 10 s")


@dataclass(frozen=True)
class PeerLimits:
    """What the peer announced in its `_hello`: the sizes it accepts."""

    max_frame: int = 16 * MiB
    max_message: int = 256 * MiB
    max_in_flight: int = 64
