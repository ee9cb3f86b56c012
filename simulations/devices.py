"""The hardware mix of a volunteer swarm, from CPUs to datacentre GPUs.

Throughput is the planner's unit: tokens per second per block (decode, batch 1), i.e. how
fast one block of the simulated model runs on that device. Figures assume a 70B-class
model in bf16 and are rough memory-bandwidth estimates (bandwidth / bytes per block, with
~50% efficiency); they are whole numbers so that summed coverage is exact in any order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    share: float  # fraction of volunteers with this device
    memory_gb: float  # memory usable for blocks and caches
    throughput: int  # tokens/s per block (integer: exact sums)
    max_sessions: int  # concurrent sessions before the cache is full
    prefill_speedup: float  # prompt tokens run this many times faster than decode steps


MIX: tuple[DeviceKind, ...] = (
    DeviceKind("cpu-desktop", 0.22, 24.0, 12, 4, 2.0),
    DeviceKind("apple-m2-max", 0.05, 48.0, 90, 8, 8.0),
    DeviceKind("gtx-1660/t4", 0.08, 14.0, 90, 8, 15.0),
    DeviceKind("rtx-3060-12g", 0.15, 11.0, 100, 12, 20.0),
    DeviceKind("rtx-3070/4060-8g", 0.12, 7.5, 130, 8, 20.0),
    DeviceKind("rtx-3090/4090", 0.22, 23.0, 280, 24, 30.0),
    DeviceKind("a100-80g", 0.12, 78.0, 550, 64, 40.0),
    DeviceKind("h100-80g", 0.04, 78.0, 900, 64, 50.0),
)


def draw_device(rng: random.Random) -> DeviceKind:
    return rng.choices(MIX, weights=[k.share for k in MIX])[0]


def span_length(kind: DeviceKind, block_gb: float, num_blocks: int) -> int:
    """Blocks that fit next to a cache of ~15% of memory and 1 GiB of runtime."""
    usable = max(0.0, kind.memory_gb - 1.0) * 0.85
    return max(1, min(num_blocks, int(usable // block_gb)))
