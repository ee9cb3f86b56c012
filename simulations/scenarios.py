"""The named scenarios: each is the default configuration with a few knobs changed."""

from __future__ import annotations

from dataclasses import dataclass, replace

from simulations.config import Cheating, Collusion, Config, SlowPeers, SybilWave


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    question: str
    hours: float  # default horizon at full size


_ALL = (
    Scenario(
        "steady", "Steady state", "How does an honest swarm with day-long churn serve?", 2.0
    ),
    Scenario(
        "churn", "Heavy churn", "Peers stay ~20 minutes: what happens to coverage, failovers "
        "and time to first token?", 2.0,
    ),
    Scenario(
        "cheaters", "Cheaters", "5% of peers run A100/H100s (to attract traffic) and cheat on "
        "100%, 10% or 1% of their steps; half of them (sleepers) serve honestly for their "
        "first 30 minutes to earn trust first. How fast are they convicted, what do they "
        "earn?", 2.0,
    ),
    Scenario(
        "sybil", "Sybil wave", "New identities, a tenth of the population, announce datacentre "
        "GPUs at once, deliver 5% of that, cheat on 10% of steps and vanish together.", 2.0,
    ),
    Scenario(
        "collusion", "Colluding pairs", "1% of peers are cheaters (10% of steps) with an "
        "accomplice on the same span that passes their audits and files fake PASS verdicts "
        "every 5 minutes; 1% cheat alone, for comparison.", 2.0,
    ),
    Scenario(
        "slow-peers", "Slow-peer drag", "10% of peers announce their GPU's throughput but "
        "deliver 5% of it.", 2.0,
    ),
)  # fmt: skip
SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}


def config_for(name: str, peers: int, hours: float | None, seed: int) -> Config:
    scenario = SCENARIOS[name]
    cfg = Config(peers=peers, hours=scenario.hours if hours is None else hours, seed=seed)
    if name == "churn":
        cfg = replace(cfg, median_online_h=1 / 3, median_offline_h=1 / 6, churn_sigma=1.0)
    elif name == "cheaters":
        cfg = replace(cfg, cheating=Cheating(share=0.05, sleeper_share=0.5, sleep_hours=0.5))
    elif name == "sybil":
        size = max(1, peers // 10)
        cfg = replace(
            cfg, sybil=SybilWave(at_hours=cfg.hours / 3, size=size, leave_after_hours=cfg.hours / 2)
        )
    elif name == "collusion":
        cfg = replace(
            cfg,
            collusion=Collusion(pairs=max(2, peers // 100)),
            cheating=Cheating(share=0.01, rates=(0.1,)),
        )
    elif name == "slow-peers":
        cfg = replace(cfg, slow=SlowPeers(share=0.1))
    return cfg
