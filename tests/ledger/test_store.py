"""The store, against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from sqlalchemy import inspect, text, update

from ledger import migrations, schema
from ledger.audits import Outcome, sign_audit
from ledger.errors import InvalidFraudProof, InvalidReceipt, Reason, StoreError
from ledger.fraud import sign_fraud_proof
from ledger.receipts import SignedReceipt
from ledger.store import LedgerStore
from ledger.verify import verify_store
from tests.ledger.helpers import NETWORK, issue_receipt, key, pub, session
from tests.ledger.test_fraud_audits import (
    ACCUSED,
    REPORTER,
    commitments_differ,
    make_audit,
    make_proof,
)

S1, S2, C1, C2 = key(41), key(42), key(43), key(44)


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    with LedgerStore(store_url, NETWORK) as opened:
        yield opened


def reason_of(store: LedgerStore, item: SignedReceipt | bytes) -> Reason:
    with pytest.raises(InvalidReceipt) as info:
        store.add_receipt(item)
    return info.value.reason


def test_insert_is_idempotent_and_durable(store: LedgerStore, store_url: str) -> None:
    first = issue_receipt(S1, C1, seq=1, amount=100)
    assert store.add_receipt(first) is True
    assert store.add_receipt(first.encode()) is False
    result = store.add_receipts([first, first])
    assert result.duplicates == [first.receipt_id] * 2 and not result.added
    store.close()
    with LedgerStore(store_url) as reopened:
        assert reopened.network_id == NETWORK
        assert reopened.receipt_ids() == {first.receipt_id}
        assert reopened.has_receipt(first.receipt_id)


def test_every_rejection_reason_is_refused_and_counted(store: LedgerStore) -> None:
    store.add_receipt(issue_receipt(S1, C1, seq=2, amount=500))
    replay = issue_receipt(S1, C1, seq=2, amount=900)
    assert reason_of(store, replay) == Reason.REPLAYED
    assert reason_of(store, replay) == Reason.REPLAYED  # evidence kept once, counted twice
    assert reason_of(store, issue_receipt(S1, C1, seq=3, amount=400)) == (
        Reason.CUMULATIVE_DECREASED
    )
    data = bytearray(issue_receipt(S1, C1, seq=4, amount=600).encode())
    data[-100] ^= 0xFF  # inside the server signature
    assert reason_of(store, bytes(data)) == Reason.FORGED_SIGNATURE
    tampered = bytearray(issue_receipt(S1, C1, seq=5, amount=700).encode())
    tampered[40] ^= 0x01  # inside the body
    assert reason_of(store, bytes(tampered)) in {Reason.TAMPERED_FIELD, Reason.MALFORMED}
    assert reason_of(store, issue_receipt(S1, C1, network_id="elsewhere")) == Reason.WRONG_NETWORK
    good = issue_receipt(S1, C1, seq=6, amount=800).encode()
    assert reason_of(store, good[:4] + b"\x07" + good[5:]) == Reason.UNKNOWN_VERSION
    assert reason_of(store, good + b"\x00") == Reason.MALFORMED
    counts = store.rejection_counts()["receipt"]
    assert counts[Reason.REPLAYED] == 2
    once = [Reason.CUMULATIVE_DECREASED, Reason.FORGED_SIGNATURE, Reason.UNKNOWN_VERSION]
    for reason in [*once, Reason.WRONG_NETWORK]:
        assert counts[reason] == 1
    assert store.counts()["receipts"] == 1 and store.counts()["receipt_conflicts"] == 1
    assert verify_store(store).ok


def test_late_older_receipts_are_kept_and_balances_use_the_highest(store: LedgerStore) -> None:
    late = [issue_receipt(S1, C1, seq=s, amount=a) for s, a in [(5, 900), (2, 300), (3, 950)]]
    result = store.add_receipts(late)
    assert len(result.added) == 3  # seq 3 is older than seq 5 yet higher: kept, it counts
    assert store.balances(free_lane=None)[pub(S1)].earned == 950


def test_batch_reports_per_item(store: LedgerStore) -> None:
    items = [
        issue_receipt(S1, C1, seq=1, amount=10),
        issue_receipt(S1, C1, seq=1, amount=10).encode()[:-3],
        issue_receipt(S1, C1, seq=2, amount=5),
        issue_receipt(S2, C2, session_id=session(7), seq=1, amount=70),
    ]
    result = store.add_receipts(items)
    assert [r.index for r in result.rejected] == [1, 2]
    assert [r.reason for r in result.rejected] == [Reason.MALFORMED, Reason.CUMULATIVE_DECREASED]
    assert len(result.added) == 2 and set(result.acknowledged) == store.receipt_ids()


def shuffled_pool(rng: random.Random) -> list[SignedReceipt]:
    """Streams with late, duplicate, conflicting and decreasing receipts."""
    pool = []
    for i in range(60):
        server, client = rng.choice([(S1, C1), (S2, C1), (S1, C2), (C1, S2), (S1, S1)])
        seq = rng.randrange(1, 5)
        amount = seq * 100 + rng.choice([0, 0, 0, 30, -150])
        sid = session(rng.randrange(3))
        receipt = issue_receipt(
            server, client, session_id=sid, seq=seq, amount=max(amount, 0), epoch=100 + i % 7
        )
        pool.append(receipt)
    return pool + pool[:10]


def test_same_receipts_in_any_order_give_the_same_balances(
    store_url: str, url_factory: Callable[[], str]
) -> None:
    rng = random.Random(11)
    pool = shuffled_pool(rng)
    results = []
    for attempt in range(3):
        with LedgerStore(url_factory(), NETWORK) as store:
            order = rng.sample(pool, len(pool))
            if attempt == 0:
                for item in order:  # one at a time
                    store.add_receipts([item])
            else:
                for i in range(0, len(order), 13):
                    store.add_receipts(order[i : i + 13])
            results.append((store.balances(), store.balances(free_lane=None)))
            assert verify_store(store).ok
    assert results[0] == results[1] == results[2]
    accounts = results[0][1]
    assert sum(a.earned for a in accounts.values()) == sum(a.spent for a in accounts.values())
    assert pub(S1) in accounts


def test_fraud_proofs_and_audits(store: LedgerStore) -> None:
    proof = sign_fraud_proof(make_proof(), REPORTER)
    store.add_receipt(issue_receipt(ACCUSED, C1, amount=999))
    assert store.balances()[pub(ACCUSED)].earned == 999
    assert store.add_fraud_proof(proof, commitments_differ) is True
    assert store.add_fraud_proof(proof.encode(), commitments_differ) is False
    with pytest.raises(InvalidFraudProof) as info:
        store.add_fraud_proof(proof, lambda p: False)
    assert info.value.reason == Reason.CHECK_FAILED
    assert store.balances()[pub(ACCUSED)].forfeited == 999
    assert store.add_audit(sign_audit(make_audit(Outcome.PASS), REPORTER)) is True
    book = store.reputation_book()
    assert book.reputation(pub(ACCUSED)).banned
    assert store.rejection_counts()["fraud_proof"] == {"check_failed": 1}
    report = verify_store(store)
    assert report.ok
    assert report.checked == {"receipts": 1, "receipt_conflicts": 0, "fraud_proofs": 1, "audits": 1}


def test_verify_detects_tampered_rows(store: LedgerStore) -> None:
    signed = issue_receipt(S1, C1, amount=100)
    store.add_receipt(signed)
    with store.engine.begin() as conn:
        conn.execute(update(schema.receipts).values(amount=10**6))
    report = verify_store(store)
    assert not report.ok and report.bad["receipts"] == 1
    assert "columns differ" in report.problems[0]
    body = bytearray(signed.body)
    body[-40] ^= 1
    with store.engine.begin() as conn:
        conn.execute(update(schema.receipts).values(amount=100, body=bytes(body)))
    report = verify_store(store)
    assert not report.ok and "tampered_field" in report.problems[0]


def test_ledger_is_bound_to_its_network(store_url: str) -> None:
    LedgerStore(store_url, NETWORK).close()
    with pytest.raises(StoreError):
        LedgerStore(store_url, "other-network")


def test_newer_schema_is_refused(store: LedgerStore, store_url: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(schema.schema_version).values(version=schema.SCHEMA_VERSION + 1))
    store.close()
    with pytest.raises(StoreError, match="newer"):
        LedgerStore(store_url, NETWORK)


def test_migrated_schema_matches_tables(store: LedgerStore) -> None:
    assert migrations.MIGRATIONS[-1].version == schema.SCHEMA_VERSION
    with store.engine.connect() as conn:
        found = inspect(conn)
        assert set(found.get_table_names()) == set(schema.metadata.tables)
        for name, table in schema.metadata.tables.items():
            assert [c["name"] for c in found.get_columns(name)] == [c.name for c in table.columns]
    assert migrations.migrate(store.engine) == schema.SCHEMA_VERSION  # a no-op when current


def test_sqlite_durability_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LedgerStore(f"sqlite:///{tmp_path / 'l.sqlite'}", NETWORK)
    with store, store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_parallel_verification_gives_the_same_verdicts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    items: list[bytes] = []
    for i in range(300):
        data = issue_receipt(S1, C1, session_id=session(i), amount=i).encode()
        items.append(data if i % 50 else data[:-1] + bytes([data[-1] ^ 1]))
    with LedgerStore(f"sqlite:///{tmp_path / 'a.sqlite'}", NETWORK, verify_workers=2) as store:
        parallel = store.add_receipts(items)
    with LedgerStore(f"sqlite:///{tmp_path / 'b.sqlite'}", NETWORK) as store:
        serial = store.add_receipts(items)
    assert parallel == serial and len(serial.rejected) == 6
    assert {r.reason for r in serial.rejected} == {Reason.FORGED_SIGNATURE}
