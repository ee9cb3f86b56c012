"""plexus.models.finite.all_finite agrees with torch.isfinite for every float dtype."""

from __future__ import annotations

import pytest
import torch

from plexus.models.finite import all_finite

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 5, -1])
def test_one_bad_value_anywhere_is_caught(dtype: torch.dtype, bad: float, where: int) -> None:
    tensor = torch.randn(2, 3, 8).to(dtype)
    assert all_finite(tensor)
    tensor.view(-1)[where] = bad
    assert not all_finite(tensor)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_largest_finite_values_are_finite(dtype: torch.dtype) -> None:
    info = torch.finfo(dtype)
    tensor = torch.tensor([[[info.max, -info.max, info.tiny, 0.0]]], dtype=dtype)
    assert all_finite(tensor)


def test_strided_views_and_tensors_needing_grad() -> None:
    base = torch.randn(4, 6, 8)
    base[1, 0, 0] = float("nan")  # outside the view below
    view = base[:, 2:, ::2]
    assert not view.is_contiguous()
    assert all_finite(view)
    assert not all_finite(base.transpose(0, 2))
    weights = torch.randn(3, 4, requires_grad=True)
    assert all_finite(weights)


def test_integer_and_empty_tensors() -> None:
    assert all_finite(torch.arange(5))
    assert all_finite(torch.empty(1, 0, 16))


def test_frombuffer_tensors_as_the_data_plane_makes_them() -> None:
    raw = bytearray(torch.tensor([1.0, 2.0, float("inf")]).numpy().tobytes())
    tensor = torch.frombuffer(raw, dtype=torch.float32)
    assert not all_finite(tensor)
    assert all_finite(tensor[:2])
