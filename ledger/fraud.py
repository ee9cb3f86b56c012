"""Fraud proofs: self-contained, signed evidence that a server returned a wrong result.

A proof carries the accused server's own signed commitment to its output for some inputs,
the signed commitments of other servers (witnesses) for the same inputs, and the signature
of the reporter who assembled it. The ledger checks everything it can without knowing what a
commitment means: the encoding, every signature, that all commitments are bound to the
proof's `inputs_hash` and network, that the witnesses are distinct and not the accused, and
that the reporter is not the accused. Whether the commitments really disagree (beyond honest
numerical noise) is decided by a *checker* that the verification layer supplies:
`verify_fraud_proof(proof, network_id, checker)`; the store refuses proofs without one.

A commitment is opaque bytes (<= 64 KiB, e.g. a TOPLOC proof or a hash), signed by its
server under domain `commitment/v1` over `network_id text8 | inputs_hash 32 | blob32`.
The verification layer signs its commitments with `sign_commitment`, so that any of them can
later appear in a fraud proof.

Encoding (version 1), then the reporter's signature under domain `fraud/v1`:

    magic "PXFP" | version u8 | network_id text8 | model_id text8 | block_start u32 |
    block_end u32 | inputs_hash 32 | epoch u63 | accused commitment | witnesses u8 (1..16) |
    witness commitment * n | reporter_key 32
    commitment = signer_key 32 | commitment blob32 | signature 64
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import nacl.signing

from ledger import signing
from ledger.codec import Reader, Writer
from ledger.errors import InvalidFraudProof, Reason

MAGIC = b"PXFP"
VERSION = 1
TAG = "fraud/v1"
COMMITMENT_TAG = "commitment/v1"
MAX_COMMITMENT_BYTES = 65536
MAX_WITNESSES = 16


@dataclass(frozen=True, slots=True)
class SignedCommitment:
    signer_key: bytes
    commitment: bytes
    signature: bytes


def commitment_message(network_id: str, inputs_hash: bytes, commitment: bytes) -> bytes:
    """What a server signs (under domain `commitment/v1`) when it commits to a result."""
    w = Writer().text8(network_id, "network_id", 64).raw(inputs_hash, 32, "inputs_hash")
    return bytes(w.blob32(commitment, "commitment", MAX_COMMITMENT_BYTES))


def sign_commitment(
    key: nacl.signing.SigningKey, network_id: str, inputs_hash: bytes, commitment: bytes
) -> SignedCommitment:
    message = commitment_message(network_id, inputs_hash, commitment)
    return SignedCommitment(
        signing.public_key(key), commitment, signing.sign(key, COMMITMENT_TAG, message)
    )


@dataclass(frozen=True, slots=True)
class FraudProof:
    network_id: str
    model_id: str
    block_start: int
    block_end: int
    inputs_hash: bytes
    epoch: int
    accused: SignedCommitment
    witnesses: tuple[SignedCommitment, ...]
    reporter_key: bytes

    @property
    def accused_key(self) -> bytes:
        return self.accused.signer_key

    def encode(self) -> bytes:
        if self.block_start > self.block_end:
            raise ValueError("block_start must be <= block_end")
        if not 1 <= len(self.witnesses) <= MAX_WITNESSES:
            raise ValueError(f"a fraud proof needs 1..{MAX_WITNESSES} witnesses")
        w = Writer().raw(MAGIC, 4, "magic").u8(VERSION, "version")
        w.text8(self.network_id, "network_id", 64).text8(self.model_id, "model_id")
        w.u32(self.block_start, "block_start").u32(self.block_end, "block_end")
        w.raw(self.inputs_hash, 32, "inputs_hash").u63(self.epoch, "epoch")
        _write_commitment(w, self.accused)
        w.u8(len(self.witnesses), "witnesses")
        for witness in self.witnesses:
            _write_commitment(w, witness)
        w.raw(self.reporter_key, 32, "reporter_key")
        return bytes(w)


def _write_commitment(w: Writer, c: SignedCommitment) -> None:
    w.raw(c.signer_key, 32, "signer_key")
    w.blob32(c.commitment, "commitment", MAX_COMMITMENT_BYTES)
    w.raw(c.signature, signing.SIGNATURE_BYTES, "commitment signature")


def _read_commitment(r: Reader) -> SignedCommitment:
    return SignedCommitment(
        r.raw(32, "signer_key"),
        r.blob32("commitment", MAX_COMMITMENT_BYTES),
        r.raw(signing.SIGNATURE_BYTES, "commitment signature"),
    )


@dataclass(frozen=True)
class SignedFraudProof:
    proof: FraudProof
    signature: bytes
    body: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.body:
            object.__setattr__(self, "body", self.proof.encode())

    @cached_property
    def proof_id(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    def encode(self) -> bytes:
        return self.body + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignedFraudProof:
        r = Reader(data, InvalidFraudProof)
        if r.raw(4, "magic") != MAGIC:
            raise r.fail("bad magic: not a fraud proof")
        version = r.u8("version")
        if version != VERSION:
            raise r.fail(f"fraud proof version {version}", Reason.UNKNOWN_VERSION)
        network_id, model_id = r.text8("network_id", 64), r.text8("model_id")
        block_start, block_end = r.u32("block_start"), r.u32("block_end")
        inputs_hash, epoch = r.raw(32, "inputs_hash"), r.u63("epoch")
        accused = _read_commitment(r)
        count = r.u8("witnesses")
        if not 1 <= count <= MAX_WITNESSES:
            raise r.fail(f"{count} witnesses, need 1..{MAX_WITNESSES}")
        witnesses = tuple(_read_commitment(r) for _ in range(count))
        reporter_key = r.raw(32, "reporter_key")
        if block_start > block_end:
            raise r.fail("block_start > block_end")
        body_end = r.position
        signature = r.raw(signing.SIGNATURE_BYTES, "signature")
        r.end()
        proof = FraudProof(
            network_id, model_id, block_start, block_end, inputs_hash, epoch, accused,
            witnesses, reporter_key,
        )  # fmt: skip
        return cls(proof, signature, bytes(data[:body_end]))


Checker = Callable[[FraudProof], bool]
"""Supplied by the verification layer: True iff the commitments prove the accused wrong."""


def sign_fraud_proof(proof: FraudProof, reporter: nacl.signing.SigningKey) -> SignedFraudProof:
    if signing.public_key(reporter) != proof.reporter_key:
        raise ValueError("signing key is not the proof's reporter key")
    body = proof.encode()
    return SignedFraudProof(proof, signing.sign(reporter, TAG, body), body)


def check_structure(signed: SignedFraudProof, network_id: str) -> None:
    """Every check that needs no knowledge of what a commitment means."""
    p = signed.proof
    if p.network_id != network_id:
        raise InvalidFraudProof(Reason.WRONG_NETWORK, f"proof is for network {p.network_id!r}")
    signers = [w.signer_key for w in p.witnesses]
    if p.accused_key in signers or len(set(signers)) != len(signers):
        raise InvalidFraudProof(Reason.MALFORMED, "witnesses must be distinct from the accused")
    if p.reporter_key == p.accused_key:
        raise InvalidFraudProof(Reason.MALFORMED, "the accused cannot report itself")
    if not signing.verify(p.reporter_key, TAG, signed.body, signed.signature):
        raise InvalidFraudProof(Reason.FORGED_SIGNATURE, "reporter signature does not verify")
    for role, c in [("accused", p.accused), *(("witness", w) for w in p.witnesses)]:
        message = commitment_message(p.network_id, p.inputs_hash, c.commitment)
        if not signing.verify(c.signer_key, COMMITMENT_TAG, message, c.signature):
            raise InvalidFraudProof(
                Reason.FORGED_SIGNATURE, f"{role} commitment signature does not verify"
            )


def verify_fraud_proof(signed: SignedFraudProof, network_id: str, checker: Checker) -> None:
    """Raise `InvalidFraudProof` unless the proof is well formed, fully signed, and the
    verification layer's `checker` confirms that the accused's commitment is wrong."""
    check_structure(signed, network_id)
    if not checker(signed.proof):
        raise InvalidFraudProof(Reason.CHECK_FAILED, "the checker does not confirm fraud")
