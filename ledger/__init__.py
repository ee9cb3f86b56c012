"""Plexus's ledger: signed receipts of work, fraud proofs, audit verdicts, and the balances
and reputations computed from them. See docs/ledger.md.

This package never imports `plexus` (plexus imports it), so it can be tested, reused and
audited alone. Keys are raw 32-byte Ed25519 public keys and pynacl `SigningKey`s.
"""

from __future__ import annotations

from ledger.audits import Audit, Outcome, SignedAudit, sign_audit
from ledger.balances import DEFAULT_FREE_LANE, Account, compute_balances
from ledger.errors import (
    InvalidAudit,
    InvalidFraudProof,
    InvalidReceipt,
    InvalidRecord,
    LedgerError,
    Reason,
    StoreError,
)
from ledger.fraud import (
    FraudProof,
    SignedCommitment,
    SignedFraudProof,
    sign_commitment,
    sign_fraud_proof,
    verify_fraud_proof,
)
from ledger.receipts import Receipt, SignedReceipt, countersign, issue, sign_as_server
from ledger.reputation import Reputation, ReputationBook, ReputationPolicy, reputation
from ledger.store import BatchResult, LedgerStore
from ledger.units import block_scale_milli, expected_amount

__all__ = [
    "DEFAULT_FREE_LANE",
    "Account",
    "Audit",
    "BatchResult",
    "FraudProof",
    "InvalidAudit",
    "InvalidFraudProof",
    "InvalidReceipt",
    "InvalidRecord",
    "LedgerError",
    "LedgerStore",
    "Outcome",
    "Reason",
    "Receipt",
    "Reputation",
    "ReputationBook",
    "ReputationPolicy",
    "SignedAudit",
    "SignedCommitment",
    "SignedFraudProof",
    "SignedReceipt",
    "StoreError",
    "block_scale_milli",
    "compute_balances",
    "countersign",
    "expected_amount",
    "issue",
    "reputation",
    "sign_as_server",
    "sign_audit",
    "sign_commitment",
    "sign_fraud_proof",
    "verify_fraud_proof",
]
