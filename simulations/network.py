"""Regions, round trips between them, and Kademlia lookups over the swarm."""

from __future__ import annotations

import math
import random

REGIONS: tuple[str, ...] = ("na-east", "na-west", "eu", "asia", "sa", "oceania")
REGION_WEIGHTS: tuple[float, ...] = (0.25, 0.15, 0.30, 0.18, 0.07, 0.05)

# One-way-ish public-internet round trips in seconds (typical inter-region RTTs).
_RTT_MS: dict[tuple[str, str], float] = {
    ("na-east", "na-west"): 65,
    ("na-east", "eu"): 85,
    ("na-east", "asia"): 180,
    ("na-east", "sa"): 120,
    ("na-east", "oceania"): 200,
    ("na-west", "eu"): 140,
    ("na-west", "asia"): 120,
    ("na-west", "sa"): 170,
    ("na-west", "oceania"): 150,
    ("eu", "asia"): 170,
    ("eu", "sa"): 200,
    ("eu", "oceania"): 260,
    ("asia", "sa"): 300,
    ("asia", "oceania"): 110,
    ("sa", "oceania"): 280,
}
SAME_REGION_MS = 25.0
DHT_ALPHA = 3  # parallel queries per lookup round (plexus.p2p.lookup default)
DHT_TIMEOUT_S = 2.0  # waiting for a peer that left
RECORD_FETCH_S = 0.05  # reading the model's server records after the lookup converges


def region_rtt(a: str, b: str) -> float:
    if a == b:
        return SAME_REGION_MS / 1000
    return _RTT_MS.get((a, b), _RTT_MS.get((b, a), 150.0)) / 1000


def draw_region(rng: random.Random) -> str:
    return rng.choices(REGIONS, weights=REGION_WEIGHTS)[0]


def lookup_hops(peers: int, rng: random.Random) -> int:
    """Rounds of a Kademlia lookup among `peers` nodes: about log2(N)/2 +- noise, >= 1.

    Each round halves the XOR distance at least; with 20-entry buckets and alpha = 3 the
    measured rounds in deployed DHTs are about half of log2(N).
    """
    mean = max(1.0, math.log2(max(peers, 2)) / 2)
    return max(1, round(rng.gauss(mean, 1.0)))


def lookup_latency(peers: int, region: str, stale: float, rng: random.Random) -> tuple[int, float]:
    """(hops, seconds) of one lookup from `region`; `stale` is the chance that a routing
    table entry points at a peer that left (churn), which costs a timeout when all alpha
    queries of a round hit one."""
    hops = lookup_hops(peers, rng)
    seconds = RECORD_FETCH_S
    for _ in range(hops):
        alive = [
            region_rtt(region, draw_region(rng)) for _ in range(DHT_ALPHA) if rng.random() >= stale
        ]
        seconds += min(alive) if alive else DHT_TIMEOUT_S
    return hops, seconds
