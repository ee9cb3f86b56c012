"""Audit reports: an auditor's signed verdict (pass or fail) on one piece of a server's work.

The verification layer decides *how* to audit; the ledger records the verdicts, because
reputation (`ledger.reputation`) is a pure function of them. Which auditors to believe is the
caller's choice (`trusted_auditors` there).

Encoding (version 1), then the auditor's 64-byte signature under domain `audit/v1`:

    magic "PXAU" | version u8 | network_id text8 | model_id text8 | block_start u32 |
    block_end u32 | session_id 16 | inputs_hash 32 | outcome u8 | epoch u63 |
    server_key 32 | auditor_key 32
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property

import nacl.signing

from ledger import signing
from ledger.codec import Reader, Writer
from ledger.errors import InvalidAudit, Reason

MAGIC = b"PXAU"
VERSION = 1
TAG = "audit/v1"


class Outcome(IntEnum):
    PASS = 1
    FAIL = 2


@dataclass(frozen=True, slots=True)
class Audit:
    network_id: str
    model_id: str
    block_start: int
    block_end: int
    session_id: bytes
    inputs_hash: bytes
    outcome: Outcome
    epoch: int
    server_key: bytes
    auditor_key: bytes

    def encode(self) -> bytes:
        if self.block_start > self.block_end:
            raise ValueError("block_start must be <= block_end")
        w = Writer().raw(MAGIC, 4, "magic").u8(VERSION, "version")
        w.text8(self.network_id, "network_id", 64).text8(self.model_id, "model_id")
        w.u32(self.block_start, "block_start").u32(self.block_end, "block_end")
        w.raw(self.session_id, 16, "session_id").raw(self.inputs_hash, 32, "inputs_hash")
        w.u8(int(Outcome(self.outcome)), "outcome").u63(self.epoch, "epoch")
        w.raw(self.server_key, 32, "server_key").raw(self.auditor_key, 32, "auditor_key")
        return bytes(w)


@dataclass(frozen=True)
class SignedAudit:
    audit: Audit
    signature: bytes
    body: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.body:
            object.__setattr__(self, "body", self.audit.encode())

    @cached_property
    def audit_id(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    def encode(self) -> bytes:
        return self.body + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignedAudit:
        r = Reader(data, InvalidAudit)
        if r.raw(4, "magic") != MAGIC:
            raise r.fail("bad magic: not an audit report")
        version = r.u8("version")
        if version != VERSION:
            raise r.fail(f"audit version {version}", Reason.UNKNOWN_VERSION)
        network_id = r.text8("network_id", 64)
        model_id = r.text8("model_id")
        block_start, block_end = r.u32("block_start"), r.u32("block_end")
        session_id, inputs_hash = r.raw(16, "session_id"), r.raw(32, "inputs_hash")
        outcome = r.u8("outcome")
        if outcome not in {o.value for o in Outcome}:
            raise r.fail(f"unknown outcome {outcome}")
        epoch = r.u63("epoch")
        server_key, auditor_key = r.raw(32, "server_key"), r.raw(32, "auditor_key")
        if block_start > block_end:
            raise r.fail("block_start > block_end")
        body_end = r.position
        signature = r.raw(signing.SIGNATURE_BYTES, "signature")
        r.end()
        audit = Audit(
            network_id, model_id, block_start, block_end, session_id, inputs_hash,
            Outcome(outcome), epoch, server_key, auditor_key,
        )  # fmt: skip
        return cls(audit, signature, bytes(data[:body_end]))


def sign_audit(audit: Audit, auditor: nacl.signing.SigningKey) -> SignedAudit:
    if signing.public_key(auditor) != audit.auditor_key:
        raise ValueError("signing key is not the audit's auditor key")
    body = audit.encode()
    return SignedAudit(audit, signing.sign(auditor, TAG, body), body)


def validate_audit(signed: SignedAudit, network_id: str) -> None:
    a = signed.audit
    if a.network_id != network_id:
        raise InvalidAudit(Reason.WRONG_NETWORK, f"audit is for network {a.network_id!r}")
    if a.auditor_key == a.server_key:
        raise InvalidAudit(Reason.MALFORMED, "a server cannot audit itself")
    if not signing.verify(a.auditor_key, TAG, signed.body, signed.signature):
        raise InvalidAudit(Reason.FORGED_SIGNATURE, "auditor signature does not verify")
