"""int8 block compression: bounded error per block, exact layout, and off unless asked."""

from __future__ import annotations

import math

import pytest
import torch

from plexus.p2p.dataplane import compression
from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.message import Kind, Message, decode_message, encode_message


def round_trip(tensor: torch.Tensor) -> torch.Tensor:
    scales, values = compression.compress(tensor)
    return compression.decompress(scales, values, list(tensor.shape), tensor.dtype)


def block_bound(tensor: torch.Tensor) -> torch.Tensor:
    """Per-element error bound: half a quantisation step plus the fp16 rounding of the scale
    (at most 127 * 2^-11 of a step), i.e. 0.57 * absmax(block) / 127."""
    flat = tensor.float().reshape(-1)
    padded = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 64)).view(-1, 64)
    absmax = padded.abs().amax(dim=1, keepdim=True).expand(-1, 64).reshape(-1)
    return (absmax * 0.57 / 127)[: flat.numel()]


@pytest.mark.parametrize("numel", [1, 63, 64, 65, 1000, 4096])
def test_error_is_within_half_a_step_of_each_blocks_absmax(numel: int) -> None:
    torch.manual_seed(numel)
    tensor = torch.randn(numel) * torch.logspace(-3, 3, numel)  # blocks of very different scale
    restored = round_trip(tensor)
    error = (restored - tensor).abs()
    assert bool((error <= block_bound(tensor) + 1e-12).all())


def test_relative_error_on_gaussian_data_is_small() -> None:
    torch.manual_seed(0)
    tensor = torch.randn(1, 16, 2048)
    restored = round_trip(tensor)
    relative = float((restored - tensor).norm() / tensor.norm())
    assert 1e-3 < relative < 1e-2  # lossy, but ~6e-3 as the notes measured


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_decompresses_to_the_original_dtype_and_shape(dtype: torch.dtype) -> None:
    tensor = torch.randn(3, 5, 70).to(dtype)
    restored = round_trip(tensor)
    assert restored.dtype == dtype and restored.shape == tensor.shape
    tolerance = block_bound(tensor) + tensor.float().abs().reshape(-1) * 2**-7  # bf16 rounding
    assert bool(((restored.float() - tensor.float()).abs().reshape(-1) <= tolerance).all())


def test_zero_blocks_and_empty_tensors() -> None:
    assert torch.equal(round_trip(torch.zeros(130)), torch.zeros(130))
    assert round_trip(torch.zeros(0, 4)).shape == (0, 4)


def test_outliers_cost_their_block_neighbours_resolution() -> None:
    tensor = torch.full((64,), 0.01)
    tensor[0] = 1000.0
    restored = round_trip(tensor)
    assert float(restored[0]) == pytest.approx(1000.0, rel=1e-3)
    assert float(restored[1:].abs().max()) == 0.0  # 0.01 is under half a step of 1000/127


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2e7])
def test_values_that_cannot_be_scaled_are_refused(bad: float) -> None:
    tensor = torch.ones(10)
    tensor[3] = bad
    with pytest.raises(ValueError):
        compression.compress(tensor)


def test_only_floating_tensors_are_compressed() -> None:
    with pytest.raises(ValueError):
        compression.compress(torch.arange(5))


def test_compressed_message_layout_and_round_trip() -> None:
    hidden = torch.randn(1, 3, 100).half()
    mask = torch.ones(1, 3, dtype=torch.int64)
    encoded = encode_message(Message("forward", {}, [hidden, mask], compress=True), Kind.REQUEST, 1)
    data = memoryview(bytearray().join(bytes(part) for part in encoded.parts))
    decoded = decode_message(data, Limits())
    descriptors = [tensor.descriptor for tensor in encoded.tensors]
    assert descriptors[0]["comp"] == compression.NAME
    assert descriptors[0]["nbytes"] == 2 * math.ceil(300 / 64) + 300
    assert "comp" not in descriptors[1]  # integers are never compressed
    assert torch.equal(decoded.tensors[1], mask)
    assert decoded.tensors[0].dtype == torch.float16
    assert float((decoded.tensors[0].float() - hidden.float()).abs().max()) < 0.05
    plain = encode_message(Message("forward", {}, [hidden]), Kind.REQUEST, 1)
    assert "comp" not in plain.tensors[0].descriptor  # off by default
