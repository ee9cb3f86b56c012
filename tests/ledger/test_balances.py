"""Balances as a pure function: latest receipt per stream, zero-sum, order-independent."""

from __future__ import annotations

import random

from ledger import units
from ledger.balances import compute_balances, latest_per_stream
from ledger.fraud import FraudProof, sign_commitment
from ledger.receipts import SignedReceipt
from tests.ledger.helpers import MODEL, NETWORK, issue_receipt, key, pub, session

S1, S2, C1, C2, C3 = key(21), key(22), key(23), key(24), key(25)
NO_CAP = {"free_lane": None}


def random_receipts(rng: random.Random, n: int) -> list[SignedReceipt]:
    """Streams among a few keys with rising (and sometimes equal or falling) amounts."""
    people = [S1, S2, C1, C2, C3]
    out: list[SignedReceipt] = []
    for i in range(n):
        server, client = rng.choice(people), rng.choice(people)
        sid = session(rng.randrange(4))
        seq = rng.randrange(1, 6)
        amount = seq * 1000 + rng.choice([0, 0, 0, 500, -1500])
        epoch = 1000 + rng.randrange(50) + i % 3
        receipt = issue_receipt(
            server, client, session_id=sid, seq=seq, amount=max(0, amount), epoch=epoch
        )
        out.append(receipt)
    return out


def total(accounts: dict) -> tuple[int, int]:  # type: ignore[type-arg]
    return sum(a.earned for a in accounts.values()), sum(a.spent for a in accounts.values())


def test_only_the_highest_cumulative_receipt_of_a_stream_counts() -> None:
    stream = [issue_receipt(S1, C1, seq=s, amount=a) for s, a in [(1, 100), (2, 250), (3, 400)]]
    accounts = compute_balances(stream, **NO_CAP)
    assert accounts[pub(S1)].earned == 400 and accounts[pub(C1)].spent == 400
    other_session = issue_receipt(S1, C1, session_id=session(2), seq=1, amount=50)
    other_server = issue_receipt(S2, C1, seq=1, amount=70)  # same session id, other server
    accounts = compute_balances([*stream, other_session, other_server], **NO_CAP)
    assert accounts[pub(C1)].spent == 520 and accounts[pub(C1)].balance == -520


def test_zero_sum_and_order_independence() -> None:
    rng = random.Random(7)
    pool = random_receipts(rng, 120)
    reference = compute_balances(pool, **NO_CAP)
    capped = compute_balances(pool, free_lane=1500)
    for _ in range(25):
        shuffled = rng.sample(pool, len(pool))
        assert compute_balances(shuffled, **NO_CAP) == reference
        assert compute_balances(shuffled, free_lane=1500) == capped
    for accounts in (reference, capped):
        earned, spent = total(accounts)
        assert earned == spent > 0
        assert sum(a.balance for a in accounts.values()) == 0


def test_self_dealing_mints_nothing() -> None:
    selfish = [issue_receipt(S1, S1, seq=s, amount=10**9 * s) for s in (1, 2)]
    assert compute_balances(selfish, **NO_CAP) == {}
    honest = issue_receipt(S1, C1, amount=300)
    accounts = compute_balances([*selfish, honest], **NO_CAP)
    assert accounts[pub(S1)].balance == 300 and accounts[pub(S1)].earned == 300


def test_free_lane_caps_what_a_fresh_client_can_owe() -> None:
    """A colluding server cannot mint from throw-away client keys beyond the free lane."""
    sybil_spend = [issue_receipt(S1, key(100 + i), amount=10**12) for i in range(3)]
    accounts = compute_balances(sybil_spend, free_lane=5000)
    assert accounts[pub(S1)].earned == 3 * 5000
    assert accounts[pub(S1)].unpaid == 3 * (10**12 - 5000)
    assert all(accounts[pub(key(100 + i))].balance == -5000 for i in range(3))
    # A client that earned first can spend what it earned plus the free lane.
    earn = issue_receipt(C1, C2, session_id=session(9), amount=4000, epoch=10)
    spend = issue_receipt(S1, C1, session_id=session(8), amount=8000, epoch=20)
    accounts = compute_balances([spend, earn], free_lane=5000)
    assert accounts[pub(C1)].spent == 8000 and accounts[pub(C1)].balance == -4000
    assert accounts[pub(C2)].balance == -4000
    # Spending settled before the earning (earlier epoch) only gets the free lane.
    early = issue_receipt(S1, C1, session_id=session(8), amount=8000, epoch=5)
    accounts = compute_balances([early, earn], free_lane=5000)
    assert accounts[pub(S1)].earned == 5000 and accounts[pub(S1)].unpaid == 3000


def test_fraud_proof_forfeits_the_convicted_servers_earnings() -> None:
    inputs = b"\x01" * 32
    proof = FraudProof(
        NETWORK, MODEL, 0, 7, inputs, 5,
        sign_commitment(S1, NETWORK, inputs, b"bad"),
        (sign_commitment(S2, NETWORK, inputs, b"good"),), pub(C3),
    )  # fmt: skip
    pool = [
        issue_receipt(S1, C1, amount=700),
        issue_receipt(S2, C1, amount=200),
        issue_receipt(C2, S1, session_id=session(3), amount=50),  # S1 as a client still pays
    ]
    accounts = compute_balances(pool, [proof], **NO_CAP)
    assert accounts[pub(S1)].earned == 0 and accounts[pub(S1)].forfeited == 700
    assert accounts[pub(S1)].balance == -50
    assert accounts[pub(C1)].spent == 200  # refunded for the convicted server's work
    earned, spent = total(accounts)
    assert earned == spent == 250


def test_scale_caps_the_claimed_amount() -> None:
    receipt = issue_receipt(S1, C1, tokens=90, seq=10, amount=10**9, span=(0, 31))
    scale_of = {MODEL: units.block_scale_milli(units.REFERENCE_BLOCK_PARAMS)}
    accounts = compute_balances([receipt], scale=scale_of.__getitem__, **NO_CAP)
    assert scale_of[MODEL] == 1000
    assert accounts[pub(S1)].earned == units.expected_amount(100, 0, 31, 1000) == 3_200_000
    assert units.block_scale_milli(2 * units.REFERENCE_BLOCK_PARAMS) == 2000
    assert units.block_scale_milli(1) == 1


def test_latest_per_stream_tie_break_is_canonical() -> None:
    a = issue_receipt(S1, C1, seq=1, amount=500, epoch=30)
    b = issue_receipt(S1, C1, seq=2, amount=500, epoch=20)
    (chosen, _), = latest_per_stream([a, b]).values()  # fmt: skip
    assert chosen == b.receipt
    (chosen, _), = latest_per_stream([b, a]).values()  # fmt: skip
    assert chosen == b.receipt
