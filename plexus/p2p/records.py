"""The signed, expiring record a server publishes in the DHT: which blocks of which model
it serves, how fast, and where its data plane listens.

Pure functions only (no I/O, no clock unless `now` is omitted). The byte layout, limits and
rejection codes are specified in docs/protocol.md, Part 1; keep the two in step.

Envelope (all offsets in bytes)::

    0   3   magic b"PXR"
    3   1   envelope version (1)
    4   32  signer's raw Ed25519 public key
    36  64  Ed25519 signature of SIGNATURE_DOMAIN || payload
    100 ..  payload: compact, sorted-keys UTF-8 JSON object (see ServerRecord)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from plexus import __version__
from plexus.errors import RecordError
from plexus.identity import Identity, public_key_of, verify

PROTOCOL_VERSION = 1
ENVELOPE_MAGIC = b"PXR"
ENVELOPE_VERSION = 1
SIGNATURE_DOMAIN = b"plexus-record-v1\x00"
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
HEADER_SIZE = len(ENVELOPE_MAGIC) + 1 + PUBLIC_KEY_SIZE + SIGNATURE_SIZE  # 100

MAX_RECORD_SIZE = 8192
"""Largest accepted envelope, header included."""
MAX_TTL = 600.0
"""A record may not be signed to live longer than this many seconds."""
CLOCK_SKEW = 30.0
"""Seconds of clock disagreement tolerated on `expires_at` by storing nodes."""
MAX_SEQ = 2**63 - 1

MAX_MODEL_ID_LEN = 256
MAX_DTYPE_LEN = 32
MAX_VERSION_LEN = 64
MAX_DATA_ADDR_LEN = 300
MAX_EXTRA_KEY_LEN = 64
MAX_EXTRA_DEPTH = 8

_FIELDS = frozenset(
    {
        "peer_id",
        "model_id",
        "start",
        "end",
        "num_blocks",
        "throughput",
        "free_cache_tokens",
        "dtype",
        "data_addr",
        "version",
        "protocol",
        "seq",
        "expires_at",
        "extra",
    }
)
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)$")


class Reason(IntEnum):
    """Why a record was rejected; the numbers are wire-stable (docs/protocol.md, Part 1)."""

    MALFORMED = 1
    OVERSIZED = 2
    UNSUPPORTED_VERSION = 3
    BAD_SIGNATURE = 4
    FORGED = 5
    KEY_MISMATCH = 6
    INVALID_FIELD = 7
    EXPIRED = 8
    EXPIRY_TOO_FAR = 9

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class RecordRejected(RecordError):
    """A record failed validation; `reason` says which rule it broke."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"record rejected ({reason.label}): {detail}")
        self.reason = reason
        self.detail = detail

    @property
    def code(self) -> int:
        return int(self.reason)


@dataclass(frozen=True)
class ServerRecord:
    """What one server announces about itself. `start`..`end` is an inclusive block span."""

    peer_id: str
    model_id: str
    start: int
    end: int
    throughput: float
    free_cache_tokens: int
    dtype: str
    data_addr: str
    seq: int
    expires_at: float
    num_blocks: int | None = None
    version: str = __version__
    protocol: int = PROTOCOL_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> range:
        return range(self.start, self.end + 1)

    def serves(self, block: int) -> bool:
        return self.start <= block <= self.end

    def is_live(self, now: float | None = None) -> bool:
        return self.expires_at > (time.time() if now is None else now)


# -- building and signing ---------------------------------------------------------------

_last_seq = 0


def next_seq() -> int:
    """A per-process strictly increasing sequence number based on the wall clock (ns)."""
    global _last_seq
    _last_seq = max(time.time_ns(), _last_seq + 1)
    return _last_seq


def make_record(
    identity: Identity,
    *,
    model_id: str,
    start: int,
    end: int,
    throughput: float,
    free_cache_tokens: int,
    dtype: str,
    data_addr: str,
    ttl: float,
    num_blocks: int | None = None,
    extra: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> ServerRecord:
    """A fresh record for `identity`, valid for `ttl` seconds from `now`."""
    now = time.time() if now is None else now
    return ServerRecord(
        peer_id=identity.peer_id_str,
        model_id=model_id,
        start=start,
        end=end,
        throughput=float(throughput),
        free_cache_tokens=free_cache_tokens,
        dtype=dtype,
        data_addr=data_addr,
        seq=next_seq(),
        expires_at=now + ttl,
        num_blocks=num_blocks,
        extra=dict(extra or {}),
    )


def encode_payload(record: ServerRecord) -> bytes:
    """The canonical payload: compact JSON, keys sorted, UTF-8, no NaN/Infinity."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    fields["extra"] = dict(record.extra)
    try:
        text = json.dumps(
            fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise RecordRejected(Reason.INVALID_FIELD, f"not JSON-encodable: {exc}") from exc
    return text.encode("utf-8")


def sign_record(record: ServerRecord, identity: Identity) -> bytes:
    """Check `record` and wrap it in an envelope signed by `identity` (its own peer)."""
    if record.peer_id != identity.peer_id_str:
        raise RecordRejected(Reason.FORGED, "a peer may only sign its own record")
    check_fields(record)
    payload = encode_payload(record)
    envelope = (
        ENVELOPE_MAGIC
        + bytes([ENVELOPE_VERSION])
        + identity.public_key_bytes
        + identity.sign(SIGNATURE_DOMAIN + payload)
        + payload
    )
    if len(envelope) > MAX_RECORD_SIZE:
        raise RecordRejected(
            Reason.OVERSIZED, f"{len(envelope)} bytes > {MAX_RECORD_SIZE} (trim `extra`)"
        )
    return envelope


# -- verifying --------------------------------------------------------------------------


def verify_record(
    envelope: bytes,
    *,
    peer_id: str | None = None,
    now: float | None = None,
    expiry_grace: float = 0.0,
) -> ServerRecord:
    """Decode and fully check an envelope; raise RecordRejected on any failure.

    `peer_id`: the peer the record must belong to (the one named by the DHT key).
    `expiry_grace`: seconds past `expires_at` still accepted (storing nodes use
    CLOCK_SKEW so a withdrawal, whose expiry is "now", still replaces the old record;
    clients use 0).
    """
    if not isinstance(envelope, bytes | bytearray | memoryview):
        raise RecordRejected(Reason.MALFORMED, "envelope is not bytes")
    envelope = bytes(envelope)
    if len(envelope) > MAX_RECORD_SIZE:
        raise RecordRejected(Reason.OVERSIZED, f"{len(envelope)} bytes > {MAX_RECORD_SIZE}")
    if len(envelope) <= HEADER_SIZE or envelope[:3] != ENVELOPE_MAGIC:
        raise RecordRejected(Reason.MALFORMED, "no record envelope (unsigned or truncated)")
    if envelope[3] != ENVELOPE_VERSION:
        raise RecordRejected(Reason.UNSUPPORTED_VERSION, f"envelope version {envelope[3]} (want 1)")
    public_key = envelope[4:36]
    signature = envelope[36:HEADER_SIZE]
    payload = envelope[HEADER_SIZE:]
    if not verify(public_key, SIGNATURE_DOMAIN + payload, signature):
        raise RecordRejected(Reason.BAD_SIGNATURE, "signature does not match the payload")
    record = decode_payload(payload)
    try:
        owner_key = public_key_of(record.peer_id)
    except ValueError as exc:
        raise RecordRejected(Reason.INVALID_FIELD, str(exc)) from exc
    if owner_key != public_key:
        raise RecordRejected(Reason.FORGED, f"signed by a key that is not {record.peer_id}'s")
    if peer_id is not None and record.peer_id != peer_id:
        raise RecordRejected(
            Reason.KEY_MISMATCH, f"record of {record.peer_id} stored under {peer_id}"
        )
    check_expiry(record, now=now, grace=expiry_grace)
    return record


def check_expiry(record: ServerRecord, *, now: float | None = None, grace: float = 0.0) -> None:
    now = time.time() if now is None else now
    if record.expires_at <= now - grace:
        raise RecordRejected(
            Reason.EXPIRED, f"expired {now - record.expires_at:.1f} s ago (seq {record.seq})"
        )
    if record.expires_at > now + MAX_TTL + CLOCK_SKEW:
        raise RecordRejected(
            Reason.EXPIRY_TOO_FAR,
            f"expires in {record.expires_at - now:.0f} s > {MAX_TTL + CLOCK_SKEW:.0f} s",
        )


def decode_payload(payload: bytes) -> ServerRecord:
    """Parse a payload into a ServerRecord, checking every field's type and range."""
    try:
        obj = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RecordRejected(Reason.MALFORMED, f"payload is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise RecordRejected(Reason.MALFORMED, "payload is not a JSON object")
    protocol = obj.get("protocol")
    if not _is_int(protocol) or protocol != PROTOCOL_VERSION:
        raise RecordRejected(
            Reason.UNSUPPORTED_VERSION, f"protocol {protocol!r} (want {PROTOCOL_VERSION})"
        )
    if set(obj) != _FIELDS:
        missing, unknown = sorted(_FIELDS - set(obj)), sorted(set(obj) - _FIELDS)
        raise RecordRejected(
            Reason.MALFORMED, f"fields missing {missing}, unknown {unknown} (use `extra`)"
        )
    for name in ("throughput", "expires_at"):
        if not _is_number(obj[name]):
            raise RecordRejected(Reason.INVALID_FIELD, f"{name} must be a finite number")
        obj[name] = float(obj[name])
    record = ServerRecord(**obj)
    check_fields(record)
    return record


def check_fields(record: ServerRecord) -> None:
    """Type and range rules for every field (raise RecordRejected INVALID_FIELD)."""

    def bad(detail: str) -> RecordRejected:
        return RecordRejected(Reason.INVALID_FIELD, detail)

    if not _is_text(record.peer_id, 128):
        raise bad("peer_id must be a peer id string")
    if not _is_text(record.model_id, MAX_MODEL_ID_LEN):
        raise bad(f"model_id must be 1..{MAX_MODEL_ID_LEN} printable characters")
    for name in ("start", "end", "free_cache_tokens", "seq"):
        value = getattr(record, name)
        if not _is_int(value) or not 0 <= value <= MAX_SEQ:
            raise bad(f"{name} must be a non-negative integer")
    if record.start > record.end:
        raise bad(f"start {record.start} > end {record.end}")
    if record.num_blocks is not None:
        if not _is_int(record.num_blocks) or record.num_blocks < 1:
            raise bad("num_blocks must be a positive integer or null")
        if record.end >= record.num_blocks:
            raise bad(f"end {record.end} >= num_blocks {record.num_blocks}")
    if not _is_number(record.throughput) or record.throughput < 0:
        raise bad("throughput must be a finite number >= 0")
    if not _is_number(record.expires_at) or record.expires_at <= 0:
        raise bad("expires_at must be a positive finite number")
    if not _is_text(record.dtype, MAX_DTYPE_LEN):
        raise bad(f"dtype must be 1..{MAX_DTYPE_LEN} printable characters")
    if not _is_text(record.version, MAX_VERSION_LEN):
        raise bad(f"version must be 1..{MAX_VERSION_LEN} printable characters")
    if not _is_int(record.protocol) or record.protocol != PROTOCOL_VERSION:
        raise RecordRejected(Reason.UNSUPPORTED_VERSION, f"protocol {record.protocol!r}")
    try:
        split_data_addr(record.data_addr)
    except ValueError as exc:
        raise bad(str(exc)) from exc
    if not isinstance(record.extra, Mapping):
        raise bad("extra must be an object")
    for key in record.extra:
        if not _is_text(key, MAX_EXTRA_KEY_LEN):
            raise bad(f"extra keys must be 1..{MAX_EXTRA_KEY_LEN} printable characters")
    if _depth(record.extra) > MAX_EXTRA_DEPTH:
        raise bad(f"extra nests deeper than {MAX_EXTRA_DEPTH}")


def split_data_addr(addr: object) -> tuple[str, int]:
    """`"host:port"` or `"[v6]:port"` -> (host, port); ValueError if malformed."""
    if not isinstance(addr, str) or not 0 < len(addr) <= MAX_DATA_ADDR_LEN:
        raise ValueError("data_addr must be a 'host:port' string")
    host, sep, port = addr.rpartition(":")
    if not sep or not _HOST_RE.match(host) or not port.isdigit() or len(port) > 5:
        raise ValueError(f"data_addr {addr!r} is not 'host:port'")
    if not 0 < int(port) < 65536:
        raise ValueError(f"data_addr port {port} out of range")
    return host.strip("[]"), int(port)


# -- choosing between versions of one peer's record -------------------------------------


def select_best(
    values: list[bytes], *, peer_id: str | None = None, now: float | None = None
) -> int:
    """Index of the record to keep among versions of one key.

    Order: valid (per verify_record with CLOCK_SKEW grace) before invalid, then highest
    `seq`, then the larger envelope bytes, so every node picks the same one whatever the
    order of `values` (py-libp2p passes [new, old] locally and [old, new] remotely).
    """
    if not values:
        raise ValueError("no values to select from")
    now = time.time() if now is None else now

    def rank(i: int) -> tuple[int, int, bytes]:
        try:
            record = verify_record(values[i], peer_id=peer_id, now=now, expiry_grace=CLOCK_SKEW)
        except RecordError:
            return (0, -1, bytes(values[i]))
        return (1, record.seq, bytes(values[i]))

    # Ties (only identical bytes) go to the later index, so re-storing the same record
    # is acknowledged rather than refused.
    return max(range(len(values)), key=lambda i: (rank(i), i))


# -- helpers ----------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value)


def _is_text(value: object, max_len: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_len and value.isprintable()


def _depth(value: object) -> int:
    if isinstance(value, Mapping):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
