"""Tensors as raw little-endian bytes plus a JSON descriptor; decoded zero-copy.

Descriptor: {"dtype": name, "shape": [ints], "nbytes": int} and, for compressed tensors,
"comp": "int8_block64". No pickle, no torch.save: a receiver only ever calls
`torch.frombuffer` on validated sizes of an allowed dtype.
"""

from __future__ import annotations

import ctypes
import math
import sys
from typing import Any, NamedTuple

import torch

from plexus.p2p.dataplane import compression
from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.errors import WireError
from plexus.p2p.dataplane.limits import Limits

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}
FLOATING = frozenset({"float32", "float16", "bfloat16"})

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("the data plane's tensor encoding assumes a little-endian host")


class EncodedTensor(NamedTuple):
    """A tensor ready to send: its descriptor and the byte buffers making up its data.

    The buffers point into `keepalive`'s memory; hold this object until they are sent.
    (Named tuples, here and for `TensorSpec`: every message builds some, and a frozen
    dataclass costs several times as much to construct.)
    """

    descriptor: dict[str, Any]
    parts: tuple[memoryview, ...]
    nbytes: int
    keepalive: tuple[torch.Tensor, ...]


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor; the caller keeps `tensor` alive."""
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * nbytes).from_address(tensor.data_ptr())).cast("B")


def encode_tensor(tensor: torch.Tensor, *, compress: bool = False) -> EncodedTensor:
    """Describe `tensor` and expose its bytes; copies only if it is not a contiguous CPU tensor."""
    name = DTYPE_NAMES.get(tensor.dtype)
    if name is None:
        raise ValueError(f"dtype {tensor.dtype} cannot be sent; allowed: {sorted(DTYPES)}")
    shape = list(tensor.shape)
    if compress and name in FLOATING:
        scales, values = compression.compress(tensor)
        parts = (raw_bytes(scales), raw_bytes(values))
        nbytes = compression.compressed_nbytes(tensor.numel())
        descriptor = {"dtype": name, "shape": shape, "nbytes": nbytes, "comp": compression.NAME}
        return EncodedTensor(descriptor, parts, nbytes, (scales, values))
    if tensor.device.type != "cpu" or tensor.requires_grad or not tensor.is_contiguous():
        tensor = tensor.detach().to("cpu").contiguous()
    if tensor.is_conj() or tensor.is_neg():
        tensor = tensor.resolve_conj().resolve_neg()
    view = raw_bytes(tensor)
    descriptor = {"dtype": name, "shape": shape, "nbytes": len(view)}
    return EncodedTensor(descriptor, (view,), len(view), (tensor,))


class TensorSpec(NamedTuple):
    """A validated descriptor."""

    dtype: torch.dtype
    shape: list[int]
    numel: int
    nbytes: int
    compressed: bool


def parse_descriptor(descriptor: object, limits: Limits, request_id: int = 0) -> TensorSpec:
    """Check a received descriptor against the whitelist and limits; raise BAD_TENSOR if not."""

    def bad(reason: str, code: int = ErrorCode.BAD_TENSOR) -> WireError:
        return WireError(reason, code, request_id=request_id)

    if type(descriptor) is not dict:
        raise bad("tensor descriptor is not an object")
    name = descriptor.get("dtype")
    dtype = DTYPES.get(name) if type(name) is str else None
    if dtype is None:
        raise bad(f"dtype {name!r} is not allowed; allowed: {sorted(DTYPES)}")
    shape = descriptor.get("shape")
    if type(shape) is not list:
        raise bad("shape must be a list of non-negative integers")
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise bad("shape must be a list of non-negative integers")
    if len(shape) > limits.max_rank:
        raise bad(f"rank {len(shape)} exceeds the limit of {limits.max_rank}")
    numel = math.prod(shape)
    if numel > limits.max_elements:
        raise bad(
            f"{numel} elements exceed the limit of {limits.max_elements}", ErrorCode.TOO_LARGE
        )
    nbytes = descriptor.get("nbytes")
    if type(nbytes) is not int:
        raise bad("nbytes must be an integer")
    comp = descriptor.get("comp")
    if comp is None:
        expected = numel * dtype.itemsize
    elif comp == compression.NAME and name in FLOATING:
        expected = compression.compressed_nbytes(numel)
    else:
        raise bad(f"compression {comp!r} is not supported for {name}")
    if nbytes != expected:
        raise bad(f"nbytes {nbytes} does not match shape {shape} of {name} (expected {expected})")
    return TensorSpec(dtype, shape, numel, expected, comp is not None)


def decode_tensor(
    spec: TensorSpec, buffer: memoryview, offset: int, request_id: int = 0
) -> torch.Tensor:
    """The tensor at `buffer[offset:offset+spec.nbytes]`, sharing memory unless compressed."""
    if spec.numel == 0:
        return torch.empty(spec.shape, dtype=spec.dtype)
    if spec.compressed:
        blocks = math.ceil(spec.numel / compression.BLOCK)
        scales = torch.frombuffer(buffer, dtype=torch.float16, count=blocks, offset=offset)
        values = torch.frombuffer(
            buffer, dtype=torch.int8, count=spec.numel, offset=offset + 2 * blocks
        )
        return compression.decompress(scales, values, spec.shape, spec.dtype)
    if spec.dtype == torch.bool:
        raw = torch.frombuffer(buffer, dtype=torch.uint8, count=spec.numel, offset=offset)
        if int(raw.max()) > 1:
            raise WireError(
                "bool tensor holds bytes other than 0 and 1",
                ErrorCode.BAD_TENSOR,
                request_id=request_id,
            )
    flat = torch.frombuffer(buffer, dtype=spec.dtype, count=spec.numel, offset=offset)
    return flat.view(*spec.shape) if spec.shape else flat.view(())
