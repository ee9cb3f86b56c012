"""Reputation: slow to earn, quick to lose, banned by fraud, the same in any order."""

from __future__ import annotations

import random

from ledger.audits import Audit, Outcome
from ledger.fraud import FraudProof, sign_commitment
from ledger.reputation import ReputationBook, reputation
from tests.ledger.helpers import MODEL, NETWORK, key, pub, session

SERVER, OTHER, AUDITOR, ROGUE = key(31), key(32), key(33), key(34)


def audit(
    outcome: Outcome, epoch: int, *, server=SERVER, auditor=AUDITOR, model=MODEL, span=(0, 7)
) -> Audit:  # type: ignore[no-untyped-def]
    start, end = span
    zero = b"\x00" * 32
    return Audit(
        NETWORK, model, start, end, session(epoch), zero, outcome, epoch, pub(server), pub(auditor)
    )


def passes(n: int, start: int = 0, **kw) -> list[Audit]:  # type: ignore[no-untyped-def]
    return [audit(Outcome.PASS, start + i, **kw) for i in range(n)]


def test_new_server_starts_untrusted() -> None:
    rep = reputation(pub(SERVER), audits=[])
    assert rep.score == 0 and rep.consecutive_valid == 0 and not rep.banned


def test_slow_to_earn_quick_to_lose() -> None:
    book = ReputationBook(passes(10))
    ten = book.reputation(pub(SERVER))
    assert ten.consecutive_valid == 10 and 0.35 < ten.score < 0.45
    assert ReputationBook(passes(45)).reputation(pub(SERVER)).score > 0.9
    history = [*passes(60), audit(Outcome.FAIL, 100)]
    after_fail = ReputationBook(history).reputation(pub(SERVER))
    assert after_fail.consecutive_valid == 0 and after_fail.score < 0.25
    recovered = ReputationBook([*history, *passes(10, start=200)]).reputation(pub(SERVER))
    assert recovered.score < ReputationBook(passes(60)).reputation(pub(SERVER)).score
    assert recovered.consecutive_valid == 10 and recovered.fails == 1 and recovered.passes == 70


def test_scopes_per_model_and_span() -> None:
    other = {"model": "other/model", "span": (8, 15)}
    history = [*passes(5), *passes(3, start=10, **other), audit(Outcome.FAIL, 20, **other)]
    book = ReputationBook(history)
    assert book.reputation(pub(SERVER), MODEL).consecutive_valid == 5
    assert book.reputation(pub(SERVER), "other/model").consecutive_valid == 0
    assert book.reputation(pub(SERVER), "other/model", (8, 15)).fails == 1
    assert book.reputation(pub(SERVER), MODEL, (8, 15)).passes == 0
    assert book.reputation(pub(SERVER)).consecutive_valid == 0  # overall: the fail was last
    assert book.reputation(pub(OTHER)).score == 0


def test_fraud_proof_bans_everywhere() -> None:
    inputs = b"\x02" * 32
    accused = sign_commitment(SERVER, NETWORK, inputs, b"x")
    witness = sign_commitment(OTHER, NETWORK, inputs, b"y")
    proof = FraudProof(NETWORK, MODEL, 0, 7, inputs, 1, accused, (witness,), pub(AUDITOR))
    book = ReputationBook([*passes(100, server=SERVER), *passes(5, server=OTHER)], [proof])
    for rep in (book.reputation(pub(SERVER)), book.reputation(pub(SERVER), MODEL)):
        assert rep.banned and rep.score == 0 and rep.consecutive_valid == 0
    assert book.reputation(pub(OTHER)).consecutive_valid == 5


def test_same_set_same_reputation_in_any_order_and_untrusted_auditors_ignored() -> None:
    rng = random.Random(3)
    outcomes = [Outcome.PASS] * 9 + [Outcome.FAIL]
    history = [audit(rng.choice(outcomes), rng.randrange(40)) for _ in range(80)]
    reference = ReputationBook(history).reputation(pub(SERVER), MODEL)
    for _ in range(10):
        shuffled = rng.sample(history, len(history))
        assert ReputationBook(shuffled + shuffled[:5]).reputation(pub(SERVER), MODEL) == reference
    smear = [audit(Outcome.FAIL, 1000 + i, auditor=ROGUE) for i in range(5)]
    trusted = ReputationBook([*history, *smear], trusted_auditors=[pub(AUDITOR)])
    assert trusted.reputation(pub(SERVER), MODEL) == reference
    self_praise = passes(50, server=OTHER, auditor=OTHER)
    assert ReputationBook(self_praise).reputation(pub(OTHER)).score == 0
