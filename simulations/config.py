"""Every knob of one simulation run, with defaults for a 70B-class model on a volunteer swarm."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.units import block_scale_milli

LLAMA_70B_BLOCK_PARAMS = 855_654_400  # attention 150,994,944 + MLP 704,643,072 + norms


@dataclass(frozen=True)
class Cheating:
    """A share of peers that return wrong results on a share of their requests (steps)."""

    share: float = 0.0  # of the population
    rates: tuple[float, ...] = (1.0, 0.1, 0.01)  # cheat rates, split evenly among cheaters
    sleeper_share: float = 0.0  # of the cheaters: honest for their first `sleep_hours`
    sleep_hours: float = 0.5


@dataclass(frozen=True)
class SybilWave:
    """`size` new identities appear at once, announce datacentre GPUs and cheat."""

    at_hours: float = 1.0
    size: int = 0
    leave_after_hours: float = 2.0
    cheat_rate: float = 0.1


@dataclass(frozen=True)
class Collusion:
    """Pairs of (cheater, accomplice). The accomplice serves honestly on the same span,
    answers PASS whenever it audits its partner, and files fake PASS audits of its partner
    every `farm_every_s` to lower the audit rate the policy applies to it."""

    pairs: int = 0
    cheat_rate: float = 0.1
    farm_every_s: float = 300.0


@dataclass(frozen=True)
class SlowPeers:
    """A share of peers that announce an ordinary GPU but deliver `delivered_fraction` of it."""

    share: float = 0.0
    delivered_fraction: float = 0.05


@dataclass(frozen=True)
class Config:
    peers: int = 10_000  # population (identities that come and go)
    hours: float = 3.0
    seed: int = 0
    warmup_hours: float = 0.25  # sessions start after the first servers loaded their spans
    # The model: Llama-3-70B-like, 80 blocks of ~1.71 GB in bf16.
    model_id: str = "meta-llama/Meta-Llama-3-70B"
    num_blocks: int = 80
    block_gb: float = 1.71
    scale_milli: int = field(default_factory=lambda: block_scale_milli(LLAMA_70B_BLOCK_PARAMS))
    # Churn: each identity alternates online / offline periods (log-normal, minutes to days).
    median_online_h: float = 6.0
    median_offline_h: float = 2.0
    churn_sigma: float = 1.5
    load_span_s: tuple[float, float] = (60.0, 240.0)  # download + load weights on joining
    rebalance_period_s: float = 1800.0
    # Clients.
    sessions_per_peer_hour: float = 2.0
    consumer_share: float = 0.3  # sessions from pure consumers rather than serving peers
    median_prompt_tokens: float = 400.0
    median_generated_tokens: float = 300.0
    max_length: int = 2048  # cache a session reserves on every server
    view_refresh_s: float = 60.0  # how stale a client's view of the swarm may be
    max_open_attempts: int = 6  # plexus.client.inference.MAX_RECOVERY_ATTEMPTS
    dead_server_timeout_s: float = 3.0  # opening a session on a server that left
    # Reputation and audits.
    ledger_period_s: float = 600.0  # reputation book rebuilt this often
    newcomer_weight: float = 0.5  # planner reputation of a server with ledger score 0
    audit_floor: float = 0.02
    audit_sample_steps: int = 4  # steps an auditor re-executes
    honest_mismatch: float = 0.001  # chance an honest result fails an audit (numerics)
    checker_false_accept: float = 0.0  # chance the fraud-proof checker convicts an honest one
    cheating: Cheating = field(default_factory=Cheating)
    sybil: SybilWave = field(default_factory=SybilWave)
    collusion: Collusion = field(default_factory=Collusion)
    slow: SlowPeers = field(default_factory=SlowPeers)
    sample_every_s: float = 300.0
    balance_checkpoints: int = 8

    @property
    def horizon_s(self) -> float:
        return self.hours * 3600.0
