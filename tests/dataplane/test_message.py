"""Message encoding: exact round trips for every allowed dtype, zero-copy decoding, and a
precise error (code and request id) for every way a header or tensor can be wrong."""

from __future__ import annotations

import json

import pytest
import torch

from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.errors import WireError
from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.message import (
    ALIGN,
    Kind,
    Message,
    decode_message,
    encode_message,
)
from plexus.p2p.dataplane.tensors import DTYPES

LIMITS = Limits()


def wire(message: Message, kind: Kind = Kind.REQUEST, request_id: int = 7) -> memoryview:
    encoded = encode_message(message, kind, request_id)
    data = bytearray().join(bytes(part) for part in encoded.parts)
    assert len(data) == encoded.nbytes
    return memoryview(data)


def sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, dtype=torch.int64).to(dtype)


@pytest.mark.parametrize("name", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 5), (1, 1, 2048), (2, 0, 3), (7, 1, 3, 2)])
def test_round_trip_is_exact_for_every_dtype_and_shape(name: str, shape: tuple[int, ...]) -> None:
    tensor = sample(DTYPES[name], shape)
    sliced = tensor[..., :1] if tensor.dim() else tensor  # a non-contiguous view as well
    message = Message("forward", {"session": "abc", "step": 3}, [tensor, sliced])
    decoded = decode_message(wire(message, Kind.REQUEST, 42), LIMITS)
    assert (decoded.type, decoded.kind, decoded.request_id) == ("forward", Kind.REQUEST, 42)
    assert decoded.fields == {"session": "abc", "step": 3}
    for original, received in zip(message.tensors, decoded.tensors, strict=True):
        assert received.dtype == original.dtype
        assert received.shape == original.shape
        assert torch.equal(received, original.contiguous())


def test_bfloat16_bits_survive_exactly() -> None:
    tensor = torch.tensor(
        [1.0, -0.0, float("inf"), float("-inf"), 3.1415, 1e-40], dtype=torch.bfloat16
    )
    received = decode_message(wire(Message("x", {}, [tensor])), LIMITS).tensors[0]
    assert torch.equal(received.view(torch.int16), tensor.view(torch.int16))


def test_decoding_is_zero_copy_and_aligned() -> None:
    tensors = [torch.randn(3, 5), torch.randn(2048).half(), torch.arange(10)]
    data = wire(Message("t", {"pad": "x" * 37}, tensors))
    base = torch.frombuffer(data, dtype=torch.uint8).data_ptr()
    decoded = decode_message(data, LIMITS)
    for tensor in decoded.tensors:
        offset = tensor.data_ptr() - base
        assert 0 < offset < len(data)
        assert offset % ALIGN == 0
    decoded.tensors[0][0, 0] = 123.0  # writable, and the buffer is the tensor's memory
    assert decode_message(data, LIMITS).tensors[0][0, 0] == 123.0


def test_non_contiguous_and_grad_tensors_are_sent_by_value() -> None:
    base = torch.randn(4, 6, requires_grad=True)
    view = base.t()[1:3]
    received = decode_message(wire(Message("t", {}, [view])), LIMITS).tensors[0]
    assert torch.equal(received, view.detach())


def test_message_without_tensors_or_fields_is_small() -> None:
    data = wire(Message("_ping"), Kind.REQUEST, 1)
    assert len(data) < 40
    decoded = decode_message(data, LIMITS)
    assert decoded.tensors == [] and decoded.fields == {}


@pytest.mark.parametrize(
    "tensor", [torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.complex64)]
)
def test_encoding_refuses_dtypes_outside_the_whitelist(tensor: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        encode_message(Message("t", {}, [tensor]), Kind.REQUEST, 1)


@pytest.mark.parametrize("fields", [{"x": float("nan")}, {"x": object()}, {"x": b"bytes"}])
def test_encoding_refuses_fields_that_are_not_plain_json(fields: dict) -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_message(Message("t", fields), Kind.REQUEST, 1)


def test_encoding_refuses_bad_type_names_and_ids() -> None:
    with pytest.raises(ValueError):
        encode_message(Message(""), Kind.REQUEST, 1)
    with pytest.raises(ValueError):
        encode_message(Message("x" * 65), Kind.REQUEST, 1)
    with pytest.raises(ValueError):
        encode_message(Message("x"), Kind.REQUEST, -1)


# --- hostile input ---------------------------------------------------------------------------


def raw(header: object, body: bytes = b"", *, header_bytes: bytes | None = None) -> memoryview:
    """A message with an arbitrary header and tensor area (no alignment padding added)."""
    text = header_bytes if header_bytes is not None else json.dumps(header).encode()
    head = len(text).to_bytes(4, "big") + text
    padding = bytes((-len(head)) % ALIGN) if body else b""
    return memoryview(bytearray(head + padding + body))


def good_header(**changes: object) -> dict:
    header = {"k": 0, "t": "forward", "id": 9, "f": {}, "x": []}
    header.update(changes)
    return header


def descriptor(**changes: object) -> dict:
    value = {"dtype": "float32", "shape": [2, 3], "nbytes": 24}
    value.update(changes)
    return value


def assert_refused(data: memoryview, code: int, request_id: int = 9) -> WireError:
    with pytest.raises(WireError) as info:
        decode_message(data, LIMITS)
    assert info.value.code == code, str(info.value)
    assert info.value.request_id == request_id
    assert not info.value.fatal and str(info.value)
    return info.value


@pytest.mark.parametrize(
    "data",
    [
        memoryview(bytearray(b"")),
        memoryview(bytearray(b"\x00\x00")),
        raw(None, header_bytes=b"{not json"),
        raw(None, header_bytes=b"\xff\xfe\x00"),  # not UTF-8
        raw(None, header_bytes=b"[" * 5000 + b"]" * 5000),  # nesting deeper than the parser
        raw(None, header_bytes=b'{"k":0,"t":"x","id":NaN}'),
        raw([1, 2, 3]),
        raw("string"),
        raw(good_header(id="9")),
        raw(good_header(id=-1)),
        raw(good_header(id=True)),
        raw(good_header(id=2.5)),
        raw(good_header(id=1 << 60)),
        memoryview(bytearray((1000).to_bytes(4, "big") + b"{}")),  # length past the end
    ],
)
def test_unparseable_headers_are_malformed_without_an_id(data: memoryview) -> None:
    assert_refused(data, ErrorCode.MALFORMED, request_id=0)


def test_oversized_header_is_too_large() -> None:
    data = memoryview(bytearray((LIMITS.max_header + 1).to_bytes(4, "big") + b" " * 100))
    assert_refused(data, ErrorCode.TOO_LARGE, request_id=0)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (good_header(k=99), ErrorCode.UNKNOWN_TYPE),
        (good_header(k="0"), ErrorCode.UNKNOWN_TYPE),
        (good_header(k=None), ErrorCode.UNKNOWN_TYPE),
        (good_header(t=""), ErrorCode.MALFORMED),
        (good_header(t=5), ErrorCode.MALFORMED),
        (good_header(t="x" * 65), ErrorCode.MALFORMED),
        (good_header(f=[1]), ErrorCode.MALFORMED),
        (good_header(x={"dtype": "float32"}), ErrorCode.MALFORMED),
        (good_header(x=[descriptor()] * (LIMITS.max_tensors + 1)), ErrorCode.TOO_LARGE),
    ],
)
def test_bad_header_fields_carry_the_request_id(header: dict, code: int) -> None:
    assert_refused(raw(header), code)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ("not a dict", ErrorCode.BAD_TENSOR),
        (descriptor(dtype="float64", nbytes=48), ErrorCode.BAD_TENSOR),
        (descriptor(dtype="complex64"), ErrorCode.BAD_TENSOR),
        (descriptor(dtype="object"), ErrorCode.BAD_TENSOR),
        (descriptor(dtype=None), ErrorCode.BAD_TENSOR),
        (descriptor(shape=[2, -3]), ErrorCode.BAD_TENSOR),
        (descriptor(shape=[2, 3.0]), ErrorCode.BAD_TENSOR),
        (descriptor(shape=[True, 3]), ErrorCode.BAD_TENSOR),
        (descriptor(shape="2x3"), ErrorCode.BAD_TENSOR),
        (descriptor(shape=[1] * 9, nbytes=4), ErrorCode.BAD_TENSOR),
        (descriptor(shape=[1 << 20, 1 << 20], nbytes=4 << 40), ErrorCode.TOO_LARGE),
        (descriptor(nbytes=23), ErrorCode.BAD_TENSOR),
        (descriptor(nbytes="24"), ErrorCode.BAD_TENSOR),
        (descriptor(comp="zstd"), ErrorCode.BAD_TENSOR),
        (descriptor(dtype="int32", comp="int8_block64", nbytes=8), ErrorCode.BAD_TENSOR),
    ],
)
def test_bad_tensor_descriptors_are_refused(bad: object, code: int) -> None:
    assert_refused(raw(good_header(x=[bad]), bytes(24)), code)


@pytest.mark.parametrize("body", [bytes(23), bytes(25), bytes(24 + 64)])
def test_tensor_data_must_match_the_descriptors_exactly(body: bytes) -> None:
    assert_refused(raw(good_header(x=[descriptor()]), body), ErrorCode.BAD_TENSOR)


def test_bool_tensors_must_hold_zero_or_one() -> None:
    header = good_header(x=[descriptor(dtype="bool", shape=[4], nbytes=4)])
    assert decode_message(raw(header, b"\x00\x01\x01\x00"), LIMITS).tensors[0].tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert_refused(raw(header, b"\x00\x02\x01\x00"), ErrorCode.BAD_TENSOR)


def test_unknown_header_keys_are_ignored() -> None:
    decoded = decode_message(raw(good_header(future="feature")), LIMITS)
    assert decoded.type == "forward"


def test_limits_are_configurable() -> None:
    small = Limits(max_rank=2, max_elements=5, max_tensors=1)
    header = good_header(x=[descriptor()])
    with pytest.raises(WireError) as info:
        decode_message(raw(header, bytes(24)), small)
    assert info.value.code == ErrorCode.TOO_LARGE  # 6 elements > 5
    header = good_header(x=[descriptor(shape=[1, 1, 1], nbytes=4)])
    with pytest.raises(WireError) as info:
        decode_message(raw(header, bytes(4)), small)
    assert info.value.code == ErrorCode.BAD_TENSOR  # rank 3 > 2
