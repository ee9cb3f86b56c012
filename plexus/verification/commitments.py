"""Commitments: what a server signs with every step and forward reply.

A commitment binds, under the server's Ed25519 key (ledger domain `commitment/v1`, over
`network_id | inputs_hash | blob`):

* the **inputs hash**: SHA-256 over every position the span has processed so far in the
  session (hidden states as float32 and the mask, position-major), so a step's hash equals
  the hash of one stateless forward over the same prefix: an audit on another server
  commits to the same `inputs_hash`, and the two commitments can sit in one fraud proof;
* the **blob** (layout below): model, blocks, session, step number, the positions it
  covers, the SHA-256 of the output tensor exactly as sent, and a **sketch** of the span's
  update `delta = output - input` for every covered token: its RMS and `PROJECTIONS`
  random projections (fp16), with projection vectors seeded by the inputs hash. 8 bytes
  per token: 256 bytes per 32 tokens, plus an 89-byte header per reply.

Blob (big-endian):

    magic "PXCM" | version u8 | kind u8 (1 step, 2 forward) | model 8 (SHA-256(model_id)[:8])
    | block_start u32 | block_end u32 | session_id 16 (zero for forward) | step u32
    | position u32 (first covered position) | tokens u32 | batch u16 | hidden u32
    | projections u8 | output_hash 32 | sketch: tokens x batch x (1 + projections) fp16
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

MAGIC = b"PXCM"
VERSION = 1
PROJECTIONS = 3
_HEADER = struct.Struct(">4sBB8sII16sIIIHIB32s")
HEADER_BYTES = _HEADER.size
FP16_MAX = 65504.0
INPUTS_DOMAIN = b"plexus/inputs/v1\0"
SKETCH_DOMAIN = b"plexus/sketch/v1\0"


class CommitmentError(ValueError):
    """A commitment blob that does not parse or does not match what it should."""


class Kind(IntEnum):
    STEP = 1
    FORWARD = 2


def model_tag(model_id: str) -> bytes:
    return hashlib.sha256(model_id.encode()).digest()[:8]


# -- hashing ----------------------------------------------------------------------------


def _position_major_bytes(hidden: torch.Tensor, mask: torch.Tensor | None) -> bytes:
    """[B, T, H] hidden (any float dtype) and [B, T] mask -> bytes, position by position."""
    rows = _float32_numpy(hidden).transpose(1, 0, 2)  # [T, B, H]
    t, b, h = rows.shape
    if mask is None:
        if t == 1:  # a decode step: the row's bytes and one "real" flag per batch row
            return np.ascontiguousarray(rows).tobytes() + b"\x01" * b
        flags = np.ones((t, b), dtype=np.uint8)
    else:
        flags = (mask.detach().to("cpu").numpy() != 0).astype(np.uint8).T
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(t, b * h * 4)
    return np.concatenate([raw, flags], axis=1).tobytes()


def _float32_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float32 little-endian numpy view (or copy) of a CPU or device tensor."""
    t = tensor.detach()
    if t.device.type != "cpu" or t.dtype != torch.float32:
        t = t.to("cpu", torch.float32)
    return t.numpy()


class InputsHasher:
    """The running inputs hash of one session (or of one forward's whole input)."""

    def __init__(self, batch: int, hidden_size: int) -> None:
        self.batch, self.hidden_size = batch, hidden_size
        self._h = hashlib.sha256(INPUTS_DOMAIN + struct.pack(">II", batch, hidden_size))
        self.positions = 0

    def update(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> bytes:
        if hidden.dim() != 3 or tuple(hidden.shape[::2]) != (self.batch, self.hidden_size):
            raise CommitmentError(f"inputs of shape {list(hidden.shape)} do not fit the hash")
        self._h.update(_position_major_bytes(hidden, mask))
        self.positions += hidden.shape[1]
        return self._h.digest()

    def copy(self) -> InputsHasher:
        other = InputsHasher.__new__(InputsHasher)
        other.batch, other.hidden_size = self.batch, self.hidden_size
        other._h, other.positions = self._h.copy(), self.positions
        return other

    def digest(self) -> bytes:
        return self._h.digest()


def inputs_hash(hidden: torch.Tensor, mask: torch.Tensor | None) -> bytes:
    """The inputs hash of a whole sequence (what a stateless forward commits to)."""
    hasher = InputsHasher(hidden.shape[0], hidden.shape[2])
    return hasher.update(hidden, mask)


def tensor_hash(tensor: torch.Tensor) -> bytes:
    """SHA-256 of a tensor as sent: dtype, shape and raw bytes."""
    t = tensor.detach()
    if t.device.type != "cpu" or not t.is_contiguous():
        t = t.to("cpu").contiguous()
    head = f"{str(t.dtype).removeprefix('torch.')}:{list(t.shape)}".encode()
    digest = hashlib.sha256(head + b"\0")
    digest.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.digest()


# -- sketches ---------------------------------------------------------------------------


def projection_matrix(inputs_digest: bytes, hidden_size: int) -> torch.Tensor:
    """[PROJECTIONS, H] float32, entries N(0, 1/H), seeded by the inputs hash (CPU
    generator: identical on every machine)."""
    seed = int.from_bytes(hashlib.sha256(SKETCH_DOMAIN + inputs_digest).digest()[:8], "big")
    gen = torch.Generator().manual_seed(seed & ((1 << 63) - 1))
    return torch.randn(PROJECTIONS, hidden_size, generator=gen) / math.sqrt(hidden_size)


def sketch(delta: torch.Tensor, mask: torch.Tensor | None, proj: torch.Tensor) -> np.ndarray:
    """[B, T, H] update -> [T, B, 1 + PROJECTIONS] fp16: RMS then projections; padding
    positions (mask 0) are all zeros."""
    return _sketch(_float32_numpy(delta), mask, proj)


def _sketch(d: np.ndarray, mask: torch.Tensor | None, proj: torch.Tensor) -> np.ndarray:
    # numpy: these tensors are small, and numpy's per-call cost is a fraction of torch's.
    # einsum, not `@`: numpy's `@` goes to its OpenBLAS, which splits a long chunk (from
    # about 512 tokens at H=512, 128 at H=4096) across threads that then spin for ~0.13 s,
    # taking a core from the span's next steps (docs/performance.md, "stop 22").
    with np.errstate(over="ignore", invalid="ignore"):
        rms = np.sqrt(np.mean(d * d, axis=-1, keepdims=True, dtype=np.float32))
        projected = np.einsum("bth,ph->btp", d, proj.numpy())  # numpy's own loop, one thread
        values = np.concatenate([rms, projected], axis=-1)  # [B, T, 1 + P]
        if mask is not None:
            values = values * (mask.detach().to("cpu").numpy() != 0)[..., None]
        values = np.clip(values, -FP16_MAX, FP16_MAX)  # keeps NaN: made FP16_MAX next
        np.copyto(values, FP16_MAX, where=np.isnan(values))  # np.nan_to_num, in C only
    return np.ascontiguousarray(values.transpose(1, 0, 2).astype(np.float16))


# -- the blob ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Commitment:
    kind: Kind
    model: bytes  # model_tag(model_id)
    block_start: int
    block_end: int
    session_id: bytes  # 16 bytes; zeros for a forward
    step: int
    position: int  # first position the sketch covers
    tokens: int
    batch: int
    hidden_size: int
    output_hash: bytes
    values: np.ndarray  # [tokens, batch, 1 + PROJECTIONS] float16

    def encode(self) -> bytes:
        values = np.ascontiguousarray(self.values, dtype=">f2")
        if values.shape != (self.tokens, self.batch, 1 + PROJECTIONS):
            raise CommitmentError("sketch shape does not match the header")
        head = _HEADER.pack(
            MAGIC, VERSION, int(self.kind), self.model, self.block_start, self.block_end,
            self.session_id, self.step, self.position, self.tokens, self.batch,
            self.hidden_size, PROJECTIONS, self.output_hash,
        )  # fmt: skip
        return head + values.tobytes()

    @classmethod
    def decode(cls, blob: bytes) -> Commitment:
        if len(blob) < HEADER_BYTES:
            raise CommitmentError("commitment too short")
        (magic, version, kind, model, start, end, session, step, position, tokens, batch,
         hidden, projections, output_hash) = _HEADER.unpack_from(blob)  # fmt: skip
        if magic != MAGIC:
            raise CommitmentError("not a commitment (bad magic)")
        if version != VERSION:
            raise CommitmentError(f"unknown commitment version {version}")
        if kind not in (1, 2) or projections != PROJECTIONS or start > end:
            raise CommitmentError("bad commitment header")
        if batch < 1 or hidden < 1:
            raise CommitmentError("bad commitment header")
        expected = HEADER_BYTES + tokens * batch * (1 + PROJECTIONS) * 2
        if len(blob) != expected:
            raise CommitmentError(f"commitment is {len(blob)} bytes, header says {expected}")
        values = np.frombuffer(blob, dtype=">f2", offset=HEADER_BYTES).astype(np.float32)
        return cls(
            Kind(kind), model, start, end, session, step, position, tokens, batch, hidden,
            output_hash, values.reshape(tokens, batch, 1 + PROJECTIONS),
        )  # fmt: skip


def make_commitment(
    *,
    kind: Kind,
    model_id: str,
    block_start: int,
    block_end: int,
    session_id: bytes,
    step: int,
    inputs_digest: bytes,
    hidden: torch.Tensor,
    output: torch.Tensor,
    mask: torch.Tensor | None,
    position: int,
    sketch_from: int = 0,
) -> Commitment:
    """The commitment to `output` for `hidden` [B, T, H] (tokens `position`..); the sketch
    covers tokens from index `sketch_from` of this chunk."""
    proj = projection_matrix(inputs_digest, hidden.shape[2])
    with np.errstate(over="ignore", invalid="ignore"):
        delta = _float32_numpy(output[:, sketch_from:]) - _float32_numpy(hidden[:, sketch_from:])
    values = _sketch(delta, None if mask is None else mask[:, sketch_from:], proj)
    return Commitment(
        kind, model_tag(model_id), block_start, block_end, session_id, step,
        position + sketch_from, values.shape[0], hidden.shape[0], hidden.shape[2],
        tensor_hash(output), values.astype(np.float32),
    )  # fmt: skip
