"""Receipts: canonical bytes, signatures, and every reason a lone receipt is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest

from ledger import receipts, signing
from ledger.errors import InvalidReceipt, Reason
from ledger.receipts import Receipt, SignedReceipt, countersign, issue, sign_as_server
from tests.ledger.helpers import NETWORK, issue_receipt, key, make_receipt, pub

SERVER, CLIENT, MALLORY = key(1), key(2), key(3)

# Pinned so that any change of the byte layout is deliberate (and other implementations can
# check themselves against it): see docs/ledger.md.
GOLDEN_BODY_SHA256 = "4afb47b5356dee69c498aab3e11c8a195f07f4a63430697f8132a7a80a0c7ad2"
GOLDEN_SIGNED_SHA256 = "df26931d813ae29a7414efe33c85d6dd76b3fc206574a79ffe1bd14deadea1be"


def refusal(data: bytes, network: str = NETWORK) -> Reason:
    with pytest.raises(InvalidReceipt) as info:
        receipts.parse(data, network)
    return info.value.reason


def test_golden_encoding_is_stable() -> None:
    receipt = make_receipt(SERVER, CLIENT)
    body = receipt.encode()
    assert len(body) == 236
    assert hashlib.sha256(body).hexdigest() == GOLDEN_BODY_SHA256
    signed = issue(receipt, SERVER, CLIENT)
    assert hashlib.sha256(signed.encode()).hexdigest() == GOLDEN_SIGNED_SHA256
    assert signed.receipt_id == hashlib.sha256(body).digest()


def test_round_trip_and_determinism() -> None:
    signed = issue_receipt(SERVER, CLIENT, seq=7, amount=123_456, model_id="модель/ünï")
    parsed = receipts.parse(signed.encode(), NETWORK)
    assert parsed.receipt == signed.receipt
    assert parsed.encode() == signed.encode()
    assert parsed.receipt_id == signed.receipt_id
    again = issue_receipt(SERVER, CLIENT, seq=7, amount=123_456, model_id="модель/ünï")
    assert again.encode() == signed.encode()


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: d + b"\x00", id="trailing-byte"),
        pytest.param(lambda d: b"", id="empty"),
        pytest.param(lambda d: b"PXRD" + d[4:], id="bad-magic"),
        pytest.param(lambda d: d[:5] + b"\x00" + d[6:], id="zero-length-network"),
        pytest.param(lambda d: d[:5] + b"\xff" + d[6:], id="network-length-overruns"),
        pytest.param(lambda d: d[:6] + b"\xff" + d[7:], id="invalid-utf8"),
    ],
)
def test_malformed_encodings_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    data = issue_receipt(SERVER, CLIENT).encode()
    assert refusal(mutate(data)) == Reason.MALFORMED


def _offset_of_u63(receipt: Receipt, name: str) -> int:
    """Byte offset of a 64-bit field, found by changing it and diffing the encodings."""
    a = receipt.encode()
    b = dataclasses.replace(receipt, **{name: getattr(receipt, name) ^ 0x5A}).encode()
    first = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return first - 7  # the low byte of a big-endian u64 differs


def test_out_of_range_fields_are_malformed() -> None:
    receipt = make_receipt(SERVER, CLIENT)
    signed = issue(receipt, SERVER, CLIENT)
    data = bytearray(signed.encode())
    at = _offset_of_u63(receipt, "amount")
    data[at : at + 8] = struct.pack(">Q", 1 << 63)
    assert refusal(bytes(data)) == Reason.MALFORMED
    reversed_span = dataclasses.replace(receipt, block_start=9, block_end=3)
    with pytest.raises(ValueError):
        reversed_span.encode()
    body = bytearray(receipt.encode())
    start = body.index(struct.pack(">II", 0, 7))
    body[start : start + 8] = struct.pack(">II", 9, 3)
    with pytest.raises(InvalidReceipt) as info:
        receipts.decode_receipt(bytes(body))
    assert info.value.reason == Reason.MALFORMED


def test_unknown_version_is_refused() -> None:
    data = bytearray(issue_receipt(SERVER, CLIENT).encode())
    data[4] = 2
    assert refusal(bytes(data)) == Reason.UNKNOWN_VERSION


def test_wrong_network_is_refused() -> None:
    other = issue_receipt(SERVER, CLIENT, network_id="another-net")
    assert refusal(other.encode()) == Reason.WRONG_NETWORK
    assert receipts.parse(other.encode(), "another-net").receipt.network_id == "another-net"


def test_tampered_field_is_refused() -> None:
    receipt = make_receipt(SERVER, CLIENT, amount=1000)
    data = bytearray(issue(receipt, SERVER, CLIENT).encode())
    at = _offset_of_u63(receipt, "amount")
    data[at : at + 8] = struct.pack(">Q", 10**9)
    assert refusal(bytes(data)) == Reason.TAMPERED_FIELD
    swapped = issue(receipt, SERVER, CLIENT)
    moved = dataclasses.replace(receipt, client_key=pub(MALLORY))
    forged = SignedReceipt(moved, swapped.server_signature, swapped.client_signature)
    assert refusal(forged.encode()) == Reason.TAMPERED_FIELD


def test_forged_signatures_are_refused() -> None:
    receipt = make_receipt(SERVER, CLIENT)
    good = issue(receipt, SERVER, CLIENT)
    body = receipt.encode()
    by_mallory = signing.sign(MALLORY, receipts.SERVER_TAG, body)
    forged_server = SignedReceipt(receipt, by_mallory, good.client_signature)
    assert refusal(forged_server.encode()) == Reason.FORGED_SIGNATURE
    forged_client = SignedReceipt(
        receipt, good.server_signature, signing.sign(MALLORY, receipts.CLIENT_TAG, body)
    )
    assert refusal(forged_client.encode()) == Reason.FORGED_SIGNATURE
    zeros = SignedReceipt(receipt, bytes(64), good.client_signature)
    assert refusal(zeros.encode()) == Reason.FORGED_SIGNATURE


def test_signature_roles_are_domain_separated() -> None:
    """A server signature cannot stand in for the client's, even when one key is both."""
    selfish = make_receipt(SERVER, SERVER)
    good = issue(selfish, SERVER, SERVER)
    assert good.server_signature != good.client_signature
    swapped = SignedReceipt(selfish, good.client_signature, good.server_signature)
    assert refusal(swapped.encode()) == Reason.TAMPERED_FIELD
    receipt = make_receipt(SERVER, CLIENT)
    plain = SERVER.sign(receipt.encode()).signature  # no domain
    assert refusal(SignedReceipt(receipt, plain, plain).encode()) == Reason.TAMPERED_FIELD


def test_client_checks_server_signature_before_countersigning() -> None:
    receipt = make_receipt(SERVER, CLIENT)
    with pytest.raises(InvalidReceipt) as info:
        countersign(receipt, sign_as_server(make_receipt(SERVER, CLIENT, seq=2), SERVER), CLIENT)
    assert info.value.reason == Reason.FORGED_SIGNATURE
    with pytest.raises(ValueError):
        sign_as_server(receipt, CLIENT)
    with pytest.raises(ValueError):
        countersign(receipt, sign_as_server(receipt, SERVER), SERVER)


def test_field_lengths_are_enforced_when_encoding() -> None:
    receipt = make_receipt(SERVER, CLIENT)
    for name, value in [
        ("session_id", b"short"),
        ("inputs_hash", b"x" * 31),
        ("server_key", b"k" * 33),
        ("model_id", ""),
        ("network_id", "n" * 65),
        ("seq", -1),
        ("amount", 1 << 63),
    ]:
        with pytest.raises(ValueError):
            dataclasses.replace(receipt, **{name: value}).encode()
