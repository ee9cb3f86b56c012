"""Messages: a compact JSON header plus the tensors' raw bytes (docs/protocol.md, Part 2).

Layout: u32 big-endian header length H | H bytes of UTF-8 JSON | for each tensor: zero
padding up to a multiple of 64 bytes from the message start, then its `nbytes` bytes.
Nothing follows the last tensor.

Header: {"k": kind, "t": type, "id": request id, "f": {fields}, "x": [tensor descriptors]}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

import torch

from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.errors import WireError
from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.tensors import (
    EncodedTensor,
    decode_tensor,
    encode_tensor,
    parse_descriptor,
)

ALIGN = 64
MAX_TYPE_LENGTH = 64
MAX_REQUEST_ID = (1 << 53) - 1  # exact in every JSON implementation
_LENGTH_BYTES = 4


class Kind(IntEnum):
    REQUEST = 0
    """Expects exactly one REPLY or ERROR with the same id."""
    REPLY = 1
    ERROR = 2
    """Type "_error"; fields {"code": int, "message": str}."""
    ONEWAY = 3
    """Expects no answer (an ERROR with its id may still come back if it fails)."""
    CONTROL = 4
    """Connection management ("_hello"); never passed to handlers."""


_KINDS = {int(kind): kind for kind in Kind}


@dataclass
class Message:
    """What handlers receive and return, and what `Connection.request` sends.

    `kind` and `request_id` are set by the connection when sending and filled in on
    receipt; `compress` asks for int8 block compression of floating tensors when sending.
    """

    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    tensors: list[torch.Tensor] = field(default_factory=list)
    compress: bool = False
    kind: Kind = Kind.REQUEST
    request_id: int = 0


class EncodedMessage(NamedTuple):
    """Wire bytes of a message as a list of buffers; `tensors` keeps their memory alive."""

    parts: list[memoryview | bytes]
    nbytes: int
    tensors: list[EncodedTensor]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One encoder and one decoder: json.dumps/loads with options build a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
try:  # what _ENCODER.encode runs, without its two Python frames (every message has a header)
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring as _encode_string
except ImportError:  # pragma: no cover - CPython always has the C accelerator
    _c_make_encoder = None


def _to_json(header: dict[str, Any]) -> str:
    if _c_make_encoder is None:  # pragma: no cover
        return _ENCODER.encode(header)
    encode = _c_make_encoder(
        {}, _ENCODER.default, _encode_string, None, ":", ",", False, False, False
    )  # markers (fresh: a failed call may leave some), default, strings, indent, separators,
    # sort_keys, skipkeys, allow_nan
    return "".join(encode(header, 0))


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def encode_message(message: Message, kind: Kind, request_id: int) -> EncodedMessage:
    """Serialise `message` as `kind` with `request_id`; raises ValueError on bad content."""
    if not isinstance(message.type, str) or not 0 < len(message.type) <= MAX_TYPE_LENGTH:
        raise ValueError(f"message type must be 1-{MAX_TYPE_LENGTH} characters")
    if not 0 <= request_id <= MAX_REQUEST_ID:
        raise ValueError("request id out of range")
    encoded: list[EncodedTensor] = [
        encode_tensor(tensor, compress=message.compress) for tensor in message.tensors
    ]
    header: dict[str, Any] = {"k": int(kind), "t": message.type, "id": request_id}
    if message.fields:
        header["f"] = message.fields
    if encoded:
        header["x"] = [item.descriptor for item in encoded]
    try:
        header_bytes = _to_json(header).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"message fields are not plain JSON: {exc}") from exc
    parts: list[memoryview | bytes] = [
        len(header_bytes).to_bytes(_LENGTH_BYTES, "big"),
        header_bytes,
    ]
    offset = _LENGTH_BYTES + len(header_bytes)
    for item in encoded:
        start = _aligned(offset)
        if start > offset:
            parts.append(bytes(start - offset))
        parts.extend(item.parts)
        offset = start + item.nbytes
    return EncodedMessage(parts, offset, encoded)


def _parse_header(data: memoryview, limits: Limits) -> tuple[dict[str, Any], int]:
    if len(data) < _LENGTH_BYTES:
        raise WireError("message shorter than its header length")
    header_length = int.from_bytes(data[:_LENGTH_BYTES], "big")
    if header_length > limits.max_header:
        raise WireError(
            f"header of {header_length} bytes exceeds the limit of {limits.max_header}",
            ErrorCode.TOO_LARGE,
        )
    end = _LENGTH_BYTES + header_length
    if end > len(data):
        raise WireError("header length runs past the end of the message")
    try:
        header = _DECODER.decode(str(data[_LENGTH_BYTES:end], "utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise WireError(f"header is not valid JSON: {exc}") from None
    if type(header) is not dict:
        raise WireError("header is not a JSON object")
    return header, end


def decode_message(data: memoryview, limits: Limits) -> Message:
    """Parse and validate a received message; tensors share `data`'s memory when possible.

    Raises a non-fatal WireError (carrying the request id when it could be read).
    """
    header, offset = _parse_header(data, limits)
    request_id = header.get("id")
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        raise WireError("header id must be an integer in [0, 2^53)")
    raw_kind = header.get("k")
    kind = _KINDS.get(raw_kind) if type(raw_kind) is int else None
    if kind is None:
        raise WireError(
            f"unknown message kind {raw_kind!r}", ErrorCode.UNKNOWN_TYPE, request_id=request_id
        )
    message_type = header.get("t")
    if type(message_type) is not str or not 0 < len(message_type) <= MAX_TYPE_LENGTH:
        raise WireError("header type must be a 1-64 character string", request_id=request_id)
    fields = header.get("f", {})
    if type(fields) is not dict:
        raise WireError("header fields must be an object", request_id=request_id)
    descriptors = header.get("x", [])
    if type(descriptors) is not list:
        raise WireError("header tensor list must be an array", request_id=request_id)
    if len(descriptors) > limits.max_tensors:
        raise WireError(
            f"{len(descriptors)} tensors exceed the limit of {limits.max_tensors}",
            ErrorCode.TOO_LARGE,
            request_id=request_id,
        )
    specs = [parse_descriptor(item, limits, request_id) for item in descriptors]
    starts = []
    for spec in specs:
        start = _aligned(offset)
        starts.append(start)
        offset = start + spec.nbytes
    if offset != len(data):
        raise WireError(
            f"tensor data takes {offset} bytes but the message has {len(data)}",
            ErrorCode.BAD_TENSOR,
            request_id=request_id,
        )
    tensors = [
        decode_tensor(spec, data, start, request_id)
        for spec, start in zip(specs, starts, strict=True)
    ]
    return Message(message_type, fields, tensors, False, kind, request_id)


def error_message(code: int, text: str) -> Message:
    return Message("_error", {"code": int(code), "message": text[:1000]})
