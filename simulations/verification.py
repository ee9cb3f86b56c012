"""Spot checks of served work: whether to audit a stream, who audits, and the verdict.

The audit rate comes from the verification layer's policy (`audit_policy.load()`), fed by
the ledger's reputation (`consecutive_valid`, and whether the server failed recently). An
auditor (a random server holding the same blocks) re-executes `audit_sample_steps` steps of
the stream; a server that cheats on a share q of its steps is caught with probability
1 - (1 - q)^k. A failed audit goes to arbitration: further holders re-run the inputs, and a
fraud proof needs `MIN_WITNESSES` of them (`plexus.verification.proofs`) agreeing against the
server. Real cheating is then confirmed unless a witness is the cheater's accomplice; an
honest server that failed on numerical noise or a lying auditor is cleared, except with
probability `checker_false_accept`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.reputation import Reputation
from simulations.audit_policy import load as load_policy
from simulations.peers import Peer, Role


@dataclass
class Verdict:
    audited: bool
    no_auditor: bool = False
    passed: bool = True
    convict: bool = False
    false_fail: bool = False
    auditor: Peer | None = None
    witnesses: list[Peer] = field(default_factory=list)
    reexecuted_block_tokens: int = 0


RECENTLY_CAUGHT_S = 24 * 3600.0  # plexus.verification.policy.RECENTLY_CAUGHT_S
Pick = Callable[[set[int]], "Peer | None"]


def caught(cheat_rate: float, steps: int, rng: random.Random) -> bool:
    return cheat_rate > 0.0 and rng.random() < 1.0 - (1.0 - cheat_rate) ** steps


def _min_witnesses() -> int:
    try:
        from plexus.verification.proofs import MIN_WITNESSES
    except ImportError:
        return 2
    return int(MIN_WITNESSES)


class Auditor:
    def __init__(
        self,
        rng: random.Random,
        *,
        floor: float,
        sample_steps: int,
        honest_mismatch: float,
        checker_false_accept: float,
    ) -> None:
        self.rng = rng
        self.floor = floor
        self.sample_steps = sample_steps
        self.honest_mismatch = honest_mismatch
        self.checker_false_accept = checker_false_accept
        self.probability, self.policy_source = load_policy()
        self.min_witnesses = _min_witnesses()
        self.recently_caught_s = float(
            getattr(self.probability, "__globals__", {}).get("RECENTLY_CAUGHT_S", RECENTLY_CAUGHT_S)
        )

    def check(
        self,
        server: Peer,
        rep: Reputation,
        recently_caught: bool,
        steps: int,
        blocks: int,
        pick: Pick,
        now: float,
    ) -> Verdict:
        """Whether this stream is audited and, if so, the verdict. `pick(avoid)` returns a
        random holder of the stream's blocks whose index is not in `avoid`, or None."""
        rate = self.probability(rep.consecutive_valid, recently_caught, floor=self.floor)
        if self.rng.random() >= rate:
            return Verdict(audited=False)
        auditor = pick({server.index})
        if auditor is None:
            return Verdict(audited=False, no_auditor=True)
        k = max(1, min(self.sample_steps, steps))
        verdict = Verdict(audited=True, auditor=auditor, reexecuted_block_tokens=k * blocks)
        if self._covers(auditor, server):
            return verdict
        cheated = caught(server.rate_at(now), k, self.rng)
        if not cheated:
            wrong_auditor = caught(auditor.rate_at(now), k, self.rng)
            if not (wrong_auditor or self.rng.random() < self.honest_mismatch):
                return verdict
        verdict.passed, verdict.false_fail = False, not cheated
        verdict.witnesses = [auditor]
        avoid = {server.index, auditor.index}
        while len(verdict.witnesses) < self.min_witnesses:
            witness = pick(avoid)
            if witness is None:
                return verdict  # nobody left to arbitrate: a FAIL verdict, no proof
            avoid.add(witness.index)
            verdict.reexecuted_block_tokens += k * blocks
            if self._covers(witness, server) or (
                cheated and caught(witness.rate_at(now), k, self.rng)
            ):
                return verdict  # a witness sided with the server
            verdict.witnesses.append(witness)
        verdict.convict = cheated or self.rng.random() < self.checker_false_accept
        return verdict

    @staticmethod
    def _covers(auditor: Peer, server: Peer) -> bool:
        return auditor.role is Role.ACCOMPLICE and auditor.partner == server.index
