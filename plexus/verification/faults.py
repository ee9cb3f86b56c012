"""Fault injection for testing verification: `plexus serve --inject-fault KIND[:RATE]`.

A server started with a fault misbehaves on a fraction RATE (default 1) of its requests
and commits to what it returns, exactly like a cheater would:

* `noise`:  adds Gaussian noise of `NOISE_SCALE` times each token's update RMS;
* `skip`:   skips the last block of its span (decided per session, and per forward);
* `random`: returns unrelated values of the same shape and scale;
* `crash`:  exits abruptly (os._exit) instead of answering;
* `slow`:   answers after `SLOW_S` seconds.

TESTING ONLY: a server with a fault logs a loud warning at start-up.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch
import trio

from plexus.errors import ConfigError

KINDS = ("noise", "skip", "random", "crash", "slow")
NOISE_SCALE = 0.5
SLOW_S = (2.0, 4.0)
CRASH_EXIT_CODE = 70


@dataclass(frozen=True)
class Fault:
    kind: str
    rate: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Fault:
        kind, _, rate_text = text.partition(":")
        if kind not in KINDS:
            raise ConfigError(f"--inject-fault: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        try:
            rate = float(rate_text) if rate_text else 1.0
        except ValueError:
            raise ConfigError(f"--inject-fault {text}: RATE must be a number") from None
        if not 0.0 < rate <= 1.0:
            raise ConfigError(f"--inject-fault {text}: RATE must be in (0, 1]")
        return cls(kind, rate)

    def __str__(self) -> str:
        return f"{self.kind}:{self.rate:g}"

    def fires(self) -> bool:
        return random.random() < self.rate

    def skips(self) -> bool:
        return self.kind == "skip" and self.fires()

    async def before_reply(self) -> None:
        """crash and slow act here."""
        if self.kind == "crash" and self.fires():
            os._exit(CRASH_EXIT_CODE)
        if self.kind == "slow" and self.fires():
            await trio.sleep(random.uniform(*SLOW_S))

    def corrupt(self, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """noise and random act here, on the output of a step or forward."""
        if self.kind not in ("noise", "random") or not self.fires():
            return out
        delta = out.to(torch.float32) - hidden.to(out.device, torch.float32)
        if self.kind == "noise":
            rms = delta.pow(2).mean(-1, keepdim=True).sqrt()
            bad = out.to(torch.float32) + torch.randn_like(delta) * rms * NOISE_SCALE
        else:
            bad = torch.randn_like(delta) * out.to(torch.float32).std()
        return bad.to(out.dtype)
