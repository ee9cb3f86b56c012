"""Who is in the swarm: the honest majority and each scenario's adversaries."""

from __future__ import annotations

import random
from dataclasses import replace

from simulations.config import Config
from simulations.devices import MIX, draw_device
from simulations.network import draw_region
from simulations.peers import Peer, Role

LAST_MILE_S = (0.0, 0.005, 0.015, 0.04)  # fibre, cable, DSL, mobile / congested
DATACENTRE = MIX[-1]  # what a Sybil announces
FAST = MIX[-2:]  # what a cheater rents: the planner sends traffic to fast servers only


def _peer(index: int, name: str, rng: random.Random) -> Peer:
    return Peer(
        index=index,
        name=name,
        region=draw_region(rng),
        device=draw_device(rng),
        last_mile_s=rng.choice(LAST_MILE_S),
    )


def build(cfg: Config, rng: random.Random) -> list[Peer]:
    """`cfg.peers` identities, then the Sybil wave's extra identities."""
    peers = [_peer(i, f"p{i}", rng) for i in range(cfg.peers)]
    order = list(range(cfg.peers))
    rng.shuffle(order)
    taken = 0

    def take(n: int) -> list[Peer]:
        nonlocal taken
        chosen = [peers[i] for i in order[taken : taken + n]]
        taken += n
        return chosen

    cheaters = take(round(cfg.cheating.share * cfg.peers))
    sleepers = round(cfg.cheating.sleeper_share * len(cheaters))
    for i, peer in enumerate(cheaters):
        peer.role, peer.device = Role.CHEATER, rng.choice(FAST)
        peer.cheat_rate = cfg.cheating.rates[i % len(cfg.cheating.rates)]
        if i < sleepers:
            peer.role, peer.cheats_after_s = Role.SLEEPER, cfg.cheating.sleep_hours * 3600.0
    for _ in range(cfg.collusion.pairs):
        cheater, accomplice = take(2)
        cheater.role, cheater.cheat_rate = Role.COLLUDER, cfg.collusion.cheat_rate
        cheater.device = rng.choice(FAST)
        accomplice.role = Role.ACCOMPLICE
        accomplice.device = cheater.device  # same span length, so it can sit on the same span
        cheater.partner, accomplice.partner = accomplice.index, cheater.index
    for peer in take(round(cfg.slow.share * cfg.peers)):
        peer.role = Role.SLOW
        peer.device = replace(peer.device, name=f"slow {peer.device.name}")
        peer.delivered_fraction = cfg.slow.delivered_fraction
    for j in range(cfg.sybil.size):
        index = cfg.peers + j
        sybil = _peer(index, f"s{j}", rng)
        sybil.role, sybil.device = Role.SYBIL, DATACENTRE
        sybil.cheat_rate = cfg.sybil.cheat_rate
        sybil.delivered_fraction = 0.05  # many identities on little real hardware
        peers.append(sybil)
    return peers
