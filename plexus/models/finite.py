"""Whether a tensor from a peer holds only finite values, checked cheaply.

Every hidden state a peer sends is checked (a NaN or an infinity would poison a cache and
every token after it). `bool(torch.isfinite(t).all())` runs three torch operations and
writes a boolean tensor as large as `t`; numpy's `isfinite(...).all()` on the same memory
is 2-3x faster for a decode step's few KB and ~12x faster for a prefill's megabytes
(docs/performance.md, "stop 19").
"""

from __future__ import annotations

import numpy as np
import torch

_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def all_finite(tensor: torch.Tensor) -> bool:
    """True when every element is finite (no NaN, no +-inf). Integer tensors are finite."""
    if not tensor.is_floating_point():
        return True
    if tensor.device.type == "cpu" and tensor.dtype in _NUMPY_FLOATS:
        return bool(np.isfinite(tensor.detach().numpy()).all())
    return bool(torch.isfinite(tensor).all())  # bfloat16, fp8 and device tensors
