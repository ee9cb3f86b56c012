"""Simulated peers: identity, hardware, behaviour and serving state."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

from simulations.devices import DeviceKind


class Role(Enum):
    HONEST = "honest"
    CHEATER = "cheater"
    SLEEPER = "sleeper"  # serves honestly at first, to earn trust, then cheats
    SYBIL = "sybil"
    COLLUDER = "colluder"  # a cheater with an accomplice
    ACCOMPLICE = "accomplice"  # serves honestly, covers for its partner
    SLOW = "slow"


def peer_key(name: str) -> bytes:
    """A stable 32-byte key standing for the peer's Ed25519 public key."""
    return hashlib.sha256(f"plexus-sim/{name}".encode()).digest()


@dataclass(eq=False)
class Peer:
    index: int
    name: str
    region: str
    device: DeviceKind
    last_mile_s: float
    role: Role = Role.HONEST
    cheat_rate: float = 0.0
    cheats_after_s: float = 0.0  # of serving (sleepers)
    delivered_fraction: float = 1.0  # slow peers deliver less than they announce
    partner: int | None = None  # colluding pairs point at each other
    key: bytes = b""
    online: bool = False  # serving (span loaded and announced)
    span: tuple[int, int] | None = None
    sessions: set[int] = field(default_factory=set)
    convicted_at: float | None = None
    last_failed_audit: float | None = None
    joined_at: float | None = None  # first time it served
    streams: int = 0
    cheat_streams: int = 0  # streams it was routed while cheating
    first_cheat_stream_at: float | None = None
    audited: int = 0
    epoch: int = 0  # bumped at every join / leave, to drop stale events

    def __post_init__(self) -> None:
        if not self.key:
            self.key = peer_key(self.name)

    @property
    def is_cheater(self) -> bool:
        return self.cheat_rate > 0.0

    def rate_at(self, now: float) -> float:
        """The share of steps it cheats on at time `now`."""
        if self.joined_at is None or now - self.joined_at < self.cheats_after_s:
            return 0.0
        return self.cheat_rate

    @property
    def announced_throughput(self) -> int:
        return self.device.throughput

    @property
    def real_throughput(self) -> float:
        return self.device.throughput * self.delivered_fraction

    @property
    def load(self) -> float:
        return min(1.0, len(self.sessions) / self.device.max_sessions)

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.device.max_sessions
