"""Signed server records: encoding, signature, and every rejection rule."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from plexus.errors import RecordError
from plexus.identity import Identity
from plexus.p2p import records
from plexus.p2p.records import (
    CLOCK_SKEW,
    HEADER_SIZE,
    MAX_RECORD_SIZE,
    MAX_TTL,
    SIGNATURE_DOMAIN,
    Reason,
    RecordRejected,
    ServerRecord,
    decode_payload,
    encode_payload,
    make_record,
    select_best,
    sign_record,
    split_data_addr,
    verify_record,
)

NOW = 1_800_000_000.0
ALICE = Identity.generate(b"a" * 32)
MALLORY = Identity.generate(b"m" * 32)


def record_of(identity: Identity = ALICE, **changes: object) -> ServerRecord:
    record = make_record(
        identity,
        model_id="sha256:" + "ab" * 32,
        start=4,
        end=11,
        num_blocks=32,
        throughput=123.5,
        free_cache_tokens=4096,
        dtype="bfloat16",
        data_addr="127.0.0.1:31338",
        ttl=60,
        extra={"sessions": 2, "rtt_ms": {"12D3KooWx": 1.5}},
        now=NOW,
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def envelope_of(identity: Identity, payload: bytes) -> bytes:
    """An envelope built by hand, to craft what sign_record refuses to make."""
    signature = identity.sign(SIGNATURE_DOMAIN + payload)
    return b"PXR\x01" + identity.public_key_bytes + signature + payload


def rejected(envelope: bytes, **kwargs: object) -> Reason:
    with pytest.raises(RecordRejected) as info:
        verify_record(envelope, **{"now": NOW, **kwargs})  # type: ignore[arg-type]
    assert isinstance(info.value, RecordError)
    assert info.value.reason.label in str(info.value)
    return info.value.reason


def test_round_trip_keeps_every_field() -> None:
    record = record_of()
    envelope = sign_record(record, ALICE)
    assert envelope[:4] == b"PXR\x01"
    assert envelope[4:36] == ALICE.public_key_bytes
    assert verify_record(envelope, peer_id=ALICE.peer_id_str, now=NOW) == record


def test_payload_is_canonical_compact_sorted_json() -> None:
    record = record_of()
    payload = encode_payload(record)
    obj = json.loads(payload)
    assert list(obj) == sorted(obj)
    assert b" " not in payload
    assert payload == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert decode_payload(payload) == record


def test_seq_increases_strictly() -> None:
    seqs = [records.next_seq() for _ in range(1000)]
    assert seqs == sorted(set(seqs))


def test_forged_record_is_rejected() -> None:
    # Mallory signs a record that claims to be Alice's.
    claim = encode_payload(record_of())
    assert rejected(envelope_of(MALLORY, claim)) is Reason.FORGED
    # ... and sign_record refuses to make one at all.
    with pytest.raises(RecordRejected) as info:
        sign_record(record_of(), MALLORY)
    assert info.value.reason is Reason.FORGED


def test_record_under_another_peers_key_is_rejected() -> None:
    envelope = sign_record(record_of(), ALICE)
    assert rejected(envelope, peer_id=MALLORY.peer_id_str) is Reason.KEY_MISMATCH


@pytest.mark.parametrize(
    ("old", "new"),
    [(b'"end":11', b'"end":31'), (b'"throughput":123.5', b'"throughput":999.5')],
)
def test_tampered_field_breaks_the_signature(old: bytes, new: bytes) -> None:
    envelope = sign_record(record_of(), ALICE)
    assert old in envelope
    assert rejected(envelope.replace(old, new)) is Reason.BAD_SIGNATURE


def test_swapped_public_key_or_flipped_signature_bit_is_rejected() -> None:
    envelope = bytearray(sign_record(record_of(), ALICE))
    swapped = bytes(envelope[:4]) + MALLORY.public_key_bytes + bytes(envelope[36:])
    assert rejected(swapped) is Reason.BAD_SIGNATURE
    envelope[40] ^= 1
    assert rejected(bytes(envelope)) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "blob",
    [b"", b"PXR\x01", encode_payload(record_of()), b"XXXX" + bytes(200)],
    ids=["empty", "header-only", "unsigned-payload", "bad-magic"],
)
def test_unsigned_or_truncated_is_malformed(blob: bytes) -> None:
    assert rejected(blob) is Reason.MALFORMED


def test_zero_signature_is_rejected() -> None:
    payload = encode_payload(record_of())
    blob = b"PXR\x01" + ALICE.public_key_bytes + bytes(64) + payload
    assert rejected(blob) is Reason.BAD_SIGNATURE


def test_expired_record_is_rejected() -> None:
    envelope = sign_record(record_of(expires_at=NOW - 1), ALICE)
    assert rejected(envelope) is Reason.EXPIRED
    # Storing nodes allow CLOCK_SKEW of grace (so withdrawals replace records) ...
    verify_record(envelope, now=NOW, expiry_grace=CLOCK_SKEW)
    # ... but no more.
    assert rejected(envelope, now=NOW + CLOCK_SKEW + 2, expiry_grace=CLOCK_SKEW) is (Reason.EXPIRED)


def test_expiry_too_far_in_the_future_is_rejected() -> None:
    ok = sign_record(record_of(expires_at=NOW + MAX_TTL), ALICE)
    verify_record(ok, now=NOW)
    far = sign_record(record_of(expires_at=NOW + MAX_TTL + CLOCK_SKEW + 1), ALICE)
    assert rejected(far) is Reason.EXPIRY_TOO_FAR


def test_oversized_record_is_rejected() -> None:
    big = record_of(extra={"padding": "x" * MAX_RECORD_SIZE})
    with pytest.raises(RecordRejected) as info:
        sign_record(big, ALICE)
    assert info.value.reason is Reason.OVERSIZED
    assert rejected(envelope_of(ALICE, encode_payload(big))) is Reason.OVERSIZED
    # The limit is on the whole envelope: one byte under passes the size check.
    fits = record_of(extra={"p": ""})
    room = MAX_RECORD_SIZE - HEADER_SIZE - len(encode_payload(fits))
    exact = sign_record(record_of(extra={"p": "x" * room}), ALICE)
    assert len(exact) == MAX_RECORD_SIZE
    verify_record(exact, now=NOW)


def test_unknown_versions_are_rejected() -> None:
    envelope = sign_record(record_of(), ALICE)
    assert rejected(b"PXR\x02" + envelope[4:]) is Reason.UNSUPPORTED_VERSION
    obj = json.loads(encode_payload(record_of()))
    obj["protocol"] = 2
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert rejected(envelope_of(ALICE, payload)) is Reason.UNSUPPORTED_VERSION


def _signed_obj(mutate: object) -> bytes:
    obj = json.loads(encode_payload(record_of()))
    mutate(obj)  # type: ignore[operator]
    return envelope_of(ALICE, json.dumps(obj, sort_keys=True).encode())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.update(start=12),  # start > end
        lambda o: o.update(start=-1),
        lambda o: o.update(end=32),  # end >= num_blocks
        lambda o: o.update(num_blocks=0),
        lambda o: o.update(start=True),
        lambda o: o.update(end=11.0),
        lambda o: o.update(throughput=-1.0),
        lambda o: o.update(throughput="fast"),
        lambda o: o.update(free_cache_tokens=-5),
        lambda o: o.update(seq=2**63),
        lambda o: o.update(expires_at=None),
        lambda o: o.update(dtype=""),
        lambda o: o.update(model_id="a\nb"),
        lambda o: o.update(model_id="x" * 257),
        lambda o: o.update(data_addr="no-port"),
        lambda o: o.update(data_addr="host:99999"),
        lambda o: o.update(data_addr="a b:1"),
        lambda o: o.update(extra=[1]),
        lambda o: o.update(extra={"deep": [[[[[[[[[1]]]]]]]]]}),
        lambda o: o.update(peer_id="not-a-peer-id"),
    ],
)
def test_malformed_fields_are_rejected(mutate: object) -> None:
    assert rejected(_signed_obj(mutate)) is Reason.INVALID_FIELD


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":1,"a":2}',
        b"[1,2]",
        b"\xff\xfe",
        b'{"throughput":NaN}',
        b"[" * 5000,
    ],
    ids=["duplicate-key", "not-object", "not-utf8", "nan", "deep-nesting"],
)
def test_malformed_payloads_are_rejected(payload: bytes) -> None:
    assert rejected(envelope_of(ALICE, payload)) in (Reason.MALFORMED, Reason.UNSUPPORTED_VERSION)


def test_missing_or_unknown_fields_are_rejected() -> None:
    assert rejected(_signed_obj(lambda o: o.pop("dtype"))) is Reason.MALFORMED
    assert rejected(_signed_obj(lambda o: o.update(color="red"))) is Reason.MALFORMED


def test_duplicate_key_cannot_smuggle_a_second_value() -> None:
    payload = encode_payload(record_of()).replace(b'"end":11', b'"end":11,"end":31')
    assert rejected(envelope_of(ALICE, payload)) is Reason.MALFORMED


def test_data_addr_forms() -> None:
    assert split_data_addr("10.0.0.1:80") == ("10.0.0.1", 80)
    assert split_data_addr("[::1]:31338") == ("::1", 31338)
    assert split_data_addr("node.example.org:1") == ("node.example.org", 1)
    for bad in ("", ":80", "h:0", "h:", "h:+1", "[::1]", 42):
        with pytest.raises(ValueError):
            split_data_addr(bad)


def test_select_prefers_valid_then_highest_seq_whatever_the_order() -> None:
    old = sign_record(record_of(seq=10), ALICE)
    new = sign_record(record_of(seq=11), ALICE)
    forged = envelope_of(MALLORY, encode_payload(record_of(seq=99)))
    expired = sign_record(record_of(seq=50, expires_at=NOW - CLOCK_SKEW - 1), ALICE)
    assert select_best([old, new], now=NOW) == 1
    assert select_best([new, old], now=NOW) == 0
    assert select_best([forged, old], now=NOW) == 1
    assert select_best([expired, old], now=NOW) == 1
    assert select_best([new, new], now=NOW) == 1  # ties: the later copy, acknowledged
    with pytest.raises(ValueError):
        select_best([], now=NOW)


def test_withdrawal_beats_the_record_it_withdraws() -> None:
    live = sign_record(record_of(seq=10), ALICE)
    withdrawal = sign_record(record_of(seq=11, expires_at=NOW), ALICE)
    # Storing nodes keep it (grace), clients see it as expired.
    assert select_best([live, withdrawal], now=NOW + 1) == 1
    assert rejected(withdrawal, now=NOW + 1) is Reason.EXPIRED


def test_make_record_defaults() -> None:
    before = time.time()
    record = make_record(
        ALICE,
        model_id="m",
        start=0,
        end=0,
        throughput=1,
        free_cache_tokens=0,
        dtype="float32",
        data_addr="127.0.0.1:1",
        ttl=30,
    )
    assert record.peer_id == ALICE.peer_id_str
    assert record.protocol == records.PROTOCOL_VERSION
    assert before + 30 <= record.expires_at <= time.time() + 30
    assert record.serves(0) and not record.serves(1)
    assert isinstance(record.throughput, float)


def test_reason_codes_are_stable() -> None:
    assert {r.label: int(r) for r in Reason} == {
        "malformed": 1,
        "oversized": 2,
        "unsupported-version": 3,
        "bad-signature": 4,
        "forged": 5,
        "key-mismatch": 6,
        "invalid-field": 7,
        "expired": 8,
        "expiry-too-far": 9,
    }
