"""Receipts: what one session consumed on one server, signed by the server and the client.

A receipt is *cumulative*: its `amount` (millicredits, see `ledger.units`) and token counts
cover the whole session up to sequence number `seq`, so a newer receipt supersedes older ones
and replaying an old one gains nothing (Mysterium-style promises).

Encoding (version 1), big-endian, no padding; the layout is in docs/ledger.md:

    magic "PXRC" | version u8 | network_id text8 | model_id text8 | block_start u32 |
    block_end u32 | session_id 16 | seq u63 | prompt_tokens u63 | generated_tokens u63 |
    amount u63 | inputs_hash 32 | output_commitment 32 | epoch u63 | server_key 32 |
    client_key 32

A signed receipt is `body | server_signature 64 | client_signature 64`. Both parties sign the
same body under different domains (`receipt/v1/server`, `receipt/v1/client`); the client's
countersignature does NOT cover the server's signature. Each signature then stands alone,
which lets validation tell a tampered body (neither verifies) from one forged signature
(only the other verifies); the client still verifies the server's signature before it
countersigns (`countersign`). A receipt's identity is the SHA-256 of its body.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from functools import cached_property

import nacl.signing

from ledger import signing
from ledger.codec import MAX_U63, Reader, Writer
from ledger.errors import InvalidReceipt, Reason

MAGIC = b"PXRC"
VERSION = 1
SERVER_TAG = "receipt/v1/server"
CLIENT_TAG = "receipt/v1/client"
MAX_NETWORK_ID_BYTES = 64
MAX_MODEL_ID_BYTES = 255
SESSION_ID_BYTES = 16
HASH_BYTES = 32


@dataclass(frozen=True, slots=True)
class Receipt:
    """The fields both parties sign. `epoch` is Unix time in seconds at signing."""

    network_id: str
    model_id: str
    block_start: int
    block_end: int
    session_id: bytes
    seq: int
    prompt_tokens: int
    generated_tokens: int
    amount: int
    inputs_hash: bytes
    output_commitment: bytes
    epoch: int
    server_key: bytes
    client_key: bytes

    @property
    def stream(self) -> tuple[bytes, bytes, bytes]:
        """(server, client, session): the receipts that supersede one another."""
        return (self.server_key, self.client_key, self.session_id)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.generated_tokens

    @property
    def blocks(self) -> int:
        return self.block_end - self.block_start + 1

    def encode(self) -> bytes:
        """The canonical body; raises ValueError if a field is out of range."""
        if self.block_start > self.block_end:
            raise ValueError("block_start must be <= block_end")
        w = Writer().raw(MAGIC, 4, "magic").u8(VERSION, "version")
        w.text8(self.network_id, "network_id", MAX_NETWORK_ID_BYTES)
        w.text8(self.model_id, "model_id", MAX_MODEL_ID_BYTES)
        w.u32(self.block_start, "block_start").u32(self.block_end, "block_end")
        w.raw(self.session_id, SESSION_ID_BYTES, "session_id")
        w.u63(self.seq, "seq").u63(self.prompt_tokens, "prompt_tokens")
        w.u63(self.generated_tokens, "generated_tokens").u63(self.amount, "amount")
        w.raw(self.inputs_hash, HASH_BYTES, "inputs_hash")
        w.raw(self.output_commitment, HASH_BYTES, "output_commitment")
        w.u63(self.epoch, "epoch")
        w.raw(self.server_key, signing.PUBLIC_KEY_BYTES, "server_key")
        w.raw(self.client_key, signing.PUBLIC_KEY_BYTES, "client_key")
        return bytes(w)


# Everything after the two text fields has a fixed size: one struct call parses it.
_FIXED = struct.Struct(">II16sQQQQ32s32sQ32s32s")


def _read_receipt(r: Reader) -> Receipt:
    if r.raw(4, "magic") != MAGIC:
        raise r.fail("bad magic: not a receipt")
    version = r.u8("version")
    if version != VERSION:
        raise r.fail(f"receipt version {version}", Reason.UNKNOWN_VERSION)
    network_id = r.text8("network_id", MAX_NETWORK_ID_BYTES)
    model_id = r.text8("model_id", MAX_MODEL_ID_BYTES)
    fixed = _FIXED.unpack(r.raw(_FIXED.size, "fixed-size fields"))
    (start, end, session_id, seq, prompt, generated, amount, inputs_hash, output_commitment,
     epoch, server_key, client_key) = fixed  # fmt: skip
    if max(seq, prompt, generated, amount, epoch) > MAX_U63:
        raise r.fail("a 64-bit field is 2**63 or more")
    if start > end:
        raise r.fail("block_start > block_end")
    return Receipt(
        network_id, model_id, start, end, session_id, seq, prompt, generated, amount,
        inputs_hash, output_commitment, epoch, server_key, client_key,
    )  # fmt: skip


def decode_receipt(body: bytes) -> Receipt:
    """Strictly parse a receipt body (no signatures)."""
    reader = Reader(body, InvalidReceipt)
    receipt = _read_receipt(reader)
    reader.end()
    return receipt


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt body with the server's signature and the client's countersignature."""

    receipt: Receipt
    server_signature: bytes
    client_signature: bytes
    body: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.body:
            object.__setattr__(self, "body", self.receipt.encode())

    @cached_property
    def receipt_id(self) -> bytes:
        """SHA-256 of the body: equal bodies are one receipt, whatever the signature bytes."""
        return hashlib.sha256(self.body).digest()

    def encode(self) -> bytes:
        return self.body + self.server_signature + self.client_signature

    @classmethod
    def decode(cls, data: bytes) -> SignedReceipt:
        """Strictly parse `body | server_signature | client_signature`; no trailing bytes."""
        reader = Reader(data, InvalidReceipt)
        receipt = _read_receipt(reader)
        body_end = reader.position
        server_signature = reader.raw(signing.SIGNATURE_BYTES, "server_signature")
        client_signature = reader.raw(signing.SIGNATURE_BYTES, "client_signature")
        reader.end()
        return cls(receipt, server_signature, client_signature, bytes(data[:body_end]))


def sign_as_server(receipt: Receipt, server: nacl.signing.SigningKey) -> bytes:
    """The server's signature of `receipt`; its key must be `receipt.server_key`."""
    if signing.public_key(server) != receipt.server_key:
        raise ValueError("signing key is not the receipt's server key")
    return signing.sign(server, SERVER_TAG, receipt.encode())


def countersign(
    receipt: Receipt, server_signature: bytes, client: nacl.signing.SigningKey
) -> SignedReceipt:
    """The client checks the server's signature, then countersigns the same body."""
    if signing.public_key(client) != receipt.client_key:
        raise ValueError("signing key is not the receipt's client key")
    body = receipt.encode()
    if not signing.verify(receipt.server_key, SERVER_TAG, body, server_signature):
        raise InvalidReceipt(Reason.FORGED_SIGNATURE, "server signature does not verify")
    return SignedReceipt(receipt, server_signature, signing.sign(client, CLIENT_TAG, body), body)


def issue(
    receipt: Receipt, server: nacl.signing.SigningKey, client: nacl.signing.SigningKey
) -> SignedReceipt:
    """Both signatures at once (tests, benchmarks, a client and server in one process)."""
    return countersign(receipt, sign_as_server(receipt, server), client)


def check_signatures(signed: SignedReceipt) -> None:
    """Raise `InvalidReceipt(TAMPERED_FIELD)` if neither signature verifies over the body,
    `InvalidReceipt(FORGED_SIGNATURE)` if exactly one does not."""
    r = signed.receipt
    server_ok = signing.verify(r.server_key, SERVER_TAG, signed.body, signed.server_signature)
    client_ok = signing.verify(r.client_key, CLIENT_TAG, signed.body, signed.client_signature)
    if server_ok and client_ok:
        return
    if not server_ok and not client_ok:
        raise InvalidReceipt(Reason.TAMPERED_FIELD, "neither signature matches the body")
    who = "server" if not server_ok else "client"
    raise InvalidReceipt(Reason.FORGED_SIGNATURE, f"{who} signature does not verify")


def validate(signed: SignedReceipt, network_id: str) -> None:
    """Everything one receipt can be checked for on its own (not replay or monotonicity,
    which need the stored receipts: see `ledger.store`)."""
    if signed.receipt.network_id != network_id:
        raise InvalidReceipt(
            Reason.WRONG_NETWORK,
            f"receipt is for network {signed.receipt.network_id!r}, not {network_id!r}",
        )
    check_signatures(signed)


def parse(data: bytes, network_id: str) -> SignedReceipt:
    """Decode and validate a signed receipt's bytes in one step."""
    signed = SignedReceipt.decode(data)
    validate(signed, network_id)
    return signed
