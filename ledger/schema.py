"""The current database schema (SQLAlchemy Core), used by the store's queries.

`ledger.migrations` builds databases up to `SCHEMA_VERSION` with its own frozen table
definitions; a test checks that the migrated database matches these tables exactly.
Every signed object is stored with its exact signed bytes (`body` and signatures), so the
ledger can be re-verified from the database alone; the other columns are copies for queries.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

SCHEMA_VERSION = 1

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
)

ledger_meta = Table(
    "ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)


def _receipt_columns() -> list[Column]:
    return [
        Column("server_key", LargeBinary(32), nullable=False),
        Column("client_key", LargeBinary(32), nullable=False),
        Column("session_id", LargeBinary(16), nullable=False),
        Column("seq", BigInteger, nullable=False),
        Column("model_id", String(255), nullable=False),
        Column("block_start", BigInteger, nullable=False),
        Column("block_end", BigInteger, nullable=False),
        Column("prompt_tokens", BigInteger, nullable=False),
        Column("generated_tokens", BigInteger, nullable=False),
        Column("amount", BigInteger, nullable=False),
        Column("inputs_hash", LargeBinary(32), nullable=False),
        Column("output_commitment", LargeBinary(32), nullable=False),
        Column("epoch", BigInteger, nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("server_signature", LargeBinary(64), nullable=False),
        Column("client_signature", LargeBinary(64), nullable=False),
    ]


receipts = Table(
    "receipts",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    *_receipt_columns(),
    UniqueConstraint("session_id", "server_key", "client_key", "seq", name="uq_receipts_stream"),
)

# Validly signed receipts refused as REPLAYED (same stream and seq, other content). Both
# parties signed them, so they are kept as evidence and still count towards a stream's
# highest amount: that keeps balances independent of arrival order.
receipt_conflicts = Table(
    "receipt_conflicts",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column(
        "conflicts_with", LargeBinary(32), ForeignKey("receipts.id"), nullable=False, index=True
    ),
    *_receipt_columns(),
    Index("ix_receipt_conflicts_session", "session_id"),
)

fraud_proofs = Table(
    "fraud_proofs",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column("accused_key", LargeBinary(32), nullable=False, index=True),
    Column("reporter_key", LargeBinary(32), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
)

audits = Table(
    "audits",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column("server_key", LargeBinary(32), nullable=False, index=True),
    Column("auditor_key", LargeBinary(32), nullable=False),
    Column("model_id", String(255), nullable=False),
    Column("outcome", Integer, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
)

rejections = Table(
    "rejections",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("reason", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
)
