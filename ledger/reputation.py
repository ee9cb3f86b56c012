"""Reputation: slow to earn, quick to lose (BOINC), a pure function of audit verdicts and
fraud proofs.

For every server, and separately for every (server, model) and (server, model, span), the
verdicts are replayed in a canonical order (epoch, then audit id), so every ledger holding the
same set computes the same numbers:

* pass:  `consecutive_valid += 1`; `score += earn_rate * (1 - score)`   (slow: ~45 clean
         audits to go from 0 to 0.9 with the default 0.05)
* fail:  `consecutive_valid = 0`; `score *= fail_factor`                (quick: one failure
         keeps a quarter of the score)
* fraud proof against the server: banned; score 0 and `consecutive_valid` 0 in every scope,
  whatever comes after.

A new server starts at score 0 with no clean results. `consecutive_valid` is the input of an
adaptive audit-rate policy (BOINC audits every result until ~10 consecutive valid ones, then
with probability ~1/consecutive_valid); that policy belongs to the verification layer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ledger.audits import Audit, Outcome, SignedAudit
from ledger.fraud import FraudProof, SignedFraudProof

Scope = tuple[bytes, str | None, tuple[int, int] | None]


@dataclass(frozen=True, slots=True)
class ReputationPolicy:
    earn_rate: float = 0.05
    fail_factor: float = 0.25


@dataclass(frozen=True, slots=True)
class Reputation:
    score: float = 0.0
    """In [0, 1]; 0 for a new or banned server."""
    consecutive_valid: int = 0
    """Passed audits since the last failure: the audit-rate policy's input."""
    passes: int = 0
    fails: int = 0
    banned: bool = False


NEW = Reputation()
BANNED = Reputation(banned=True)


def _step(rep: Reputation, outcome: Outcome, policy: ReputationPolicy) -> Reputation:
    if rep.banned:
        return rep
    if outcome is Outcome.PASS:
        return replace(
            rep,
            score=rep.score + policy.earn_rate * (1.0 - rep.score),
            consecutive_valid=rep.consecutive_valid + 1,
            passes=rep.passes + 1,
        )
    return replace(
        rep, score=rep.score * policy.fail_factor, consecutive_valid=0, fails=rep.fails + 1
    )


class ReputationBook:
    """Reputations computed once from a set of verdicts; cheap to query by a path planner."""

    def __init__(
        self,
        audits: Iterable[Audit | SignedAudit],
        fraud_proofs: Iterable[FraudProof | SignedFraudProof] = (),
        *,
        trusted_auditors: Iterable[bytes] | None = None,
        policy: ReputationPolicy | None = None,
    ) -> None:
        policy = policy or ReputationPolicy()
        trusted = None if trusted_auditors is None else set(trusted_auditors)
        self._banned = {
            (p.proof if isinstance(p, SignedFraudProof) else p).accused_key for p in fraud_proofs
        }
        ordered: list[tuple[int, bytes, Audit]] = []
        for item in audits:
            audit = item.audit if isinstance(item, SignedAudit) else item
            if audit.auditor_key == audit.server_key:
                continue
            if trusted is not None and audit.auditor_key not in trusted:
                continue
            audit_id = (
                item.audit_id
                if isinstance(item, SignedAudit)
                else hashlib.sha256(audit.encode()).digest()
            )
            ordered.append((audit.epoch, audit_id, audit))
        ordered.sort(key=lambda entry: (entry[0], entry[1]))
        seen: set[bytes] = set()
        self._scores: dict[Scope, Reputation] = {}
        for _, audit_id, audit in ordered:
            if audit_id in seen:
                continue
            seen.add(audit_id)
            span = (audit.block_start, audit.block_end)
            for scope in (
                (audit.server_key, None, None),
                (audit.server_key, audit.model_id, None),
                (audit.server_key, audit.model_id, span),
            ):
                self._scores[scope] = _step(self._scores.get(scope, NEW), audit.outcome, policy)

    def reputation(
        self, server_key: bytes, model_id: str | None = None, span: tuple[int, int] | None = None
    ) -> Reputation:
        """A server's reputation overall, for one model, or for one model and block span."""
        if span is not None and model_id is None:
            raise ValueError("a span needs a model_id")
        if server_key in self._banned:
            return BANNED
        return self._scores.get((server_key, model_id, span), NEW)

    def servers(self) -> list[bytes]:
        keys = {scope[0] for scope in self._scores} | self._banned
        return sorted(keys)


def reputation(
    server_key: bytes,
    model_id: str | None = None,
    *,
    audits: Iterable[Audit | SignedAudit],
    fraud_proofs: Iterable[FraudProof | SignedFraudProof] = (),
    trusted_auditors: Iterable[bytes] | None = None,
    policy: ReputationPolicy | None = None,
) -> Reputation:
    """One server's reputation from scratch; build a `ReputationBook` to ask about many."""
    book = ReputationBook(audits, fraud_proofs, trusted_auditors=trusted_auditors, policy=policy)
    return book.reputation(server_key, model_id)
