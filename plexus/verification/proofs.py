"""Fraud proofs from disagreeing commitments, and the checker the ledger needs for them.

A proof names the accused's signed commitment and at least `MIN_WITNESSES` other servers'
signed commitments for the same inputs (the ledger has already checked every signature and
that all are bound to the proof's `inputs_hash`). `check_fraud_proof` says yes only when
every commitment is for the proof's model and blocks, the witnesses agree with each other,
and each witness disagrees with the accused beyond the honest tolerance
(`compare.sketch_threshold`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import nacl.signing

from ledger.fraud import FraudProof, SignedCommitment, SignedFraudProof, sign_fraud_proof
from plexus.verification.commitments import Commitment, CommitmentError, model_tag
from plexus.verification.compare import sketch_distance

MIN_WITNESSES = 2


def check_fraud_proof(proof: FraudProof) -> bool:
    """True iff the proof's commitments show the accused wrong (a `ledger.fraud.Checker`)."""
    try:
        accused = Commitment.decode(proof.accused.commitment)
        witnesses = [Commitment.decode(w.commitment) for w in proof.witnesses]
    except CommitmentError:
        return False
    if len(witnesses) < MIN_WITNESSES:
        return False
    tag = model_tag(proof.model_id)
    for c in (accused, *witnesses):
        if c.model != tag or (c.block_start, c.block_end) != (proof.block_start, proof.block_end):
            return False
    for w in witnesses:
        if not sketch_distance(accused, w).disagree:
            return False
    for i, a in enumerate(witnesses):
        for b in witnesses[i + 1 :]:
            d = sketch_distance(a, b)
            if d.tokens == 0 or d.disagree:
                return False
    return True


def build_fraud_proof(
    reporter: nacl.signing.SigningKey,
    *,
    network_id: str,
    model_id: str,
    block_start: int,
    block_end: int,
    inputs_hash: bytes,
    accused: SignedCommitment,
    witnesses: Sequence[SignedCommitment],
) -> SignedFraudProof:
    proof = FraudProof(
        network_id=network_id,
        model_id=model_id,
        block_start=block_start,
        block_end=block_end,
        inputs_hash=inputs_hash,
        epoch=int(time.time()),
        accused=accused,
        witnesses=tuple(witnesses),
        reporter_key=bytes(reporter.verify_key),
    )
    return sign_fraud_proof(proof, reporter)
