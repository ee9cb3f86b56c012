"""Pinning a process to some CPU cores (`plexus serve --cpus`).

On a machine that runs several peers (or a peer beside other work), giving each its own
cores keeps one process's wake-ups and caches from landing on the core another is
computing on (docs/performance.md measures the effect).
"""

from __future__ import annotations

import os

from plexus.errors import ConfigError

MAX_CPU_INDEX = 4095


def parse_cpu_list(text: str) -> set[int]:
    """`"0-3,6"` -> {0, 1, 2, 3, 6} (the Linux cpulist notation)."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        first, sep, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            message = f"--cpus: {part!r} is not a core number or range (e.g. 0-3,6)"
            raise ConfigError(message) from None
        if not 0 <= lo <= hi <= MAX_CPU_INDEX:
            raise ConfigError(f"--cpus: {part!r} is not a valid range of core numbers")
        cpus.update(range(lo, hi + 1))
    return cpus


def pin_to(cpus: set[int]) -> None:
    """Run this process (and the threads it starts from now on) on `cpus` only."""
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError("--cpus is not supported on this platform")
    available = os.sched_getaffinity(0)
    missing = sorted(cpus - available)
    if missing:
        raise ConfigError(
            f"--cpus: cores {missing} are not available to this process "
            f"(it may use {sorted(available)})"
        )
    os.sched_setaffinity(0, cpus)
