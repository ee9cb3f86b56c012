"""Fraud proofs and audit reports: structure, signatures, the pluggable checker."""

from __future__ import annotations

import dataclasses

import pytest

from ledger import fraud
from ledger.audits import Audit, Outcome, SignedAudit, sign_audit, validate_audit
from ledger.errors import InvalidAudit, InvalidFraudProof, Reason
from ledger.fraud import FraudProof, SignedFraudProof, sign_commitment, sign_fraud_proof
from tests.ledger.helpers import MODEL, NETWORK, key, pub, session

ACCUSED, WITNESS_A, WITNESS_B, REPORTER = key(11), key(12), key(13), key(14)
INPUTS = b"\x11" * 32


def commitments_differ(proof: FraudProof) -> bool:
    """A stand-in checker: fraud iff every witness agrees and the accused differs."""
    answers = {w.commitment for w in proof.witnesses}
    return len(answers) == 1 and proof.accused.commitment not in answers


def make_proof(**overrides: object) -> FraudProof:
    fields: dict[str, object] = {
        "network_id": NETWORK,
        "model_id": MODEL,
        "block_start": 0,
        "block_end": 7,
        "inputs_hash": INPUTS,
        "epoch": 1_700_000_100,
        "accused": sign_commitment(ACCUSED, NETWORK, INPUTS, b"wrong"),
        "witnesses": (
            sign_commitment(WITNESS_A, NETWORK, INPUTS, b"right"),
            sign_commitment(WITNESS_B, NETWORK, INPUTS, b"right"),
        ),
        "reporter_key": pub(REPORTER),
    }
    fields.update(overrides)
    return FraudProof(**fields)  # type: ignore[arg-type]


def refusal(signed: SignedFraudProof) -> Reason:
    with pytest.raises(InvalidFraudProof) as info:
        decoded = SignedFraudProof.decode(signed.encode())
        fraud.verify_fraud_proof(decoded, NETWORK, commitments_differ)
    return info.value.reason


def test_valid_proof_round_trips_and_verifies() -> None:
    signed = sign_fraud_proof(make_proof(), REPORTER)
    decoded = SignedFraudProof.decode(signed.encode())
    assert decoded.proof == signed.proof and decoded.proof_id == signed.proof_id
    fraud.verify_fraud_proof(decoded, NETWORK, commitments_differ)
    assert decoded.proof.accused_key == pub(ACCUSED)


def test_checker_decides_whether_it_is_fraud() -> None:
    honest = make_proof(accused=sign_commitment(ACCUSED, NETWORK, INPUTS, b"right"))
    assert refusal(sign_fraud_proof(honest, REPORTER)) == Reason.CHECK_FAILED


def test_forged_commitment_signatures_are_refused() -> None:
    framed = fraud.SignedCommitment(pub(ACCUSED), b"wrong", fraud.sign_commitment(
        REPORTER, NETWORK, INPUTS, b"wrong").signature)  # fmt: skip
    assert refusal(sign_fraud_proof(make_proof(accused=framed), REPORTER)) == (
        Reason.FORGED_SIGNATURE
    )
    other_inputs = sign_commitment(ACCUSED, NETWORK, b"\x22" * 32, b"wrong")
    assert refusal(sign_fraud_proof(make_proof(accused=other_inputs), REPORTER)) == (
        Reason.FORGED_SIGNATURE
    )
    bad_witness = dataclasses.replace(make_proof().witnesses[0], commitment=b"changed")
    proof = make_proof(witnesses=(bad_witness,))
    assert refusal(sign_fraud_proof(proof, REPORTER)) == Reason.FORGED_SIGNATURE


def test_reporter_signature_and_tampering() -> None:
    signed = sign_fraud_proof(make_proof(), REPORTER)
    data = bytearray(signed.encode())
    data[-70] ^= 1  # inside the reporter key, which the reporter signed
    with pytest.raises(InvalidFraudProof) as info:
        fraud.verify_fraud_proof(SignedFraudProof.decode(bytes(data)), NETWORK, lambda p: True)
    assert info.value.reason == Reason.FORGED_SIGNATURE


def test_structure_rules() -> None:
    accused_as_witness = make_proof(
        witnesses=(sign_commitment(ACCUSED, NETWORK, INPUTS, b"right"),)
    )
    assert refusal(sign_fraud_proof(accused_as_witness, REPORTER)) == Reason.MALFORMED
    twice = make_proof(witnesses=(make_proof().witnesses[0],) * 2)
    assert refusal(sign_fraud_proof(twice, REPORTER)) == Reason.MALFORMED
    self_report = make_proof(reporter_key=pub(ACCUSED))
    assert refusal(sign_fraud_proof(self_report, ACCUSED)) == Reason.MALFORMED
    with pytest.raises(ValueError):
        make_proof(witnesses=()).encode()
    elsewhere = sign_fraud_proof(make_proof(network_id="another-net"), REPORTER)
    assert refusal(elsewhere) == Reason.WRONG_NETWORK


def test_malformed_and_unknown_version() -> None:
    data = sign_fraud_proof(make_proof(), REPORTER).encode()
    for bad in (data[:-1], data + b"\x00", b"PXFQ" + data[4:]):
        with pytest.raises(InvalidFraudProof) as info:
            SignedFraudProof.decode(bad)
        assert info.value.reason == Reason.MALFORMED
    with pytest.raises(InvalidFraudProof) as info:
        SignedFraudProof.decode(data[:4] + b"\x09" + data[5:])
    assert info.value.reason == Reason.UNKNOWN_VERSION


def make_audit(outcome: Outcome = Outcome.PASS, **overrides: object) -> Audit:
    fields: dict[str, object] = {
        "network_id": NETWORK, "model_id": MODEL, "block_start": 0, "block_end": 7,
        "session_id": session(5), "inputs_hash": INPUTS, "outcome": outcome,
        "epoch": 1_700_000_000, "server_key": pub(ACCUSED), "auditor_key": pub(REPORTER),
    }  # fmt: skip
    fields.update(overrides)
    return Audit(**fields)  # type: ignore[arg-type]


def test_audits_sign_verify_and_refuse() -> None:
    signed = sign_audit(make_audit(Outcome.FAIL), REPORTER)
    decoded = SignedAudit.decode(signed.encode())
    validate_audit(decoded, NETWORK)
    assert decoded.audit.outcome is Outcome.FAIL and decoded.audit_id == signed.audit_id
    forged = SignedAudit(signed.audit, sign_audit(make_audit(), REPORTER).signature)
    with pytest.raises(InvalidAudit) as info:
        validate_audit(SignedAudit.decode(forged.encode()), NETWORK)
    assert info.value.reason == Reason.FORGED_SIGNATURE
    with pytest.raises(InvalidAudit) as info:
        validate_audit(sign_audit(make_audit(network_id="x"), REPORTER), NETWORK)
    assert info.value.reason == Reason.WRONG_NETWORK
    self_audit = sign_audit(make_audit(auditor_key=pub(ACCUSED)), ACCUSED)
    with pytest.raises(InvalidAudit):
        validate_audit(self_audit, NETWORK)
    data = bytearray(signed.encode())
    outcome_at = len(signed.body) - 32 - 32 - 8 - 1
    data[outcome_at] = 7
    with pytest.raises(InvalidAudit) as info:
        SignedAudit.decode(bytes(data))
    assert info.value.reason == Reason.MALFORMED
