"""Comparing results with tolerances calibrated on honest variation (docs/verification.md).

Two comparisons, both on the span's *update* `delta = output - input` (the residual
stream carries the input through and would hide what the blocks did):

* **full tensors** (the client, which holds the audited server's output and the auditor's):
  relative L2 error of the update over each step's real tokens; a step disagrees when it
  exceeds `FULL_TOLERANCE`;
* **sketches** (anyone, from two signed commitments, e.g. a fraud proof's checker): the
  squared distance of the projections over the shared tokens, divided by the energy of
  the reference update. For Gaussian per-token error of relative size r the statistic is
  r^2 * chi2(k)/k with k = tokens x (1 + PROJECTIONS), so the threshold for honest error up to
  `HONEST_RHO` at a false-alarm rate of `SKETCH_FALSE_ALARM` is
  HONEST_RHO * sqrt(q_chi2(k, 1 - SKETCH_FALSE_ALARM) / k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from plexus.verification.commitments import PROJECTIONS, Commitment

HONEST_RHO = 0.08
"""Bound on the honest relative error of one token's update (calibrated worst token:
5.6%, fp32 vs bf16; docs/verification.md)."""
FULL_TOLERANCE = 0.15
"""A step whose update differs by more (relative L2 over its tokens) disagrees."""
SKETCH_FALSE_ALARM = 1e-7
_Z = 5.199  # standard normal quantile for 1 - 1e-7


def chi2_quantile(k: int, z: float = _Z) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile with k degrees of freedom
    (within a few percent of the exact value for k >= 3 at these tails)."""
    a = 2.0 / (9.0 * k)
    return k * (1.0 - a + z * math.sqrt(a)) ** 3


def sketch_threshold(tokens: int) -> float:
    k = max(1, tokens) * (1 + PROJECTIONS)
    return HONEST_RHO * math.sqrt(chi2_quantile(k) / k)


def step_errors(delta_a: torch.Tensor, delta_b: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Relative L2 error of update `delta_a` against reference `delta_b` ([B, T, H]) over
    real tokens."""
    a, b = delta_a.to(torch.float32), delta_b.to(torch.float32)
    if mask is not None:
        keep = (mask != 0).unsqueeze(-1).to(a.device)
        a, b = a * keep, b * keep
    denom = float(b.norm())
    num = float((a - b).norm())
    if not math.isfinite(num) or not math.isfinite(denom):
        return math.inf
    return num / max(denom, 1e-12)


@dataclass(frozen=True)
class SketchDistance:
    distance: float  # relative error estimate
    tokens: int  # tokens compared

    @property
    def threshold(self) -> float:
        return sketch_threshold(self.tokens)

    @property
    def disagree(self) -> bool:
        return self.tokens > 0 and self.distance > self.threshold


def compatible(a: Commitment, b: Commitment) -> bool:
    return (
        a.model == b.model
        and (a.block_start, a.block_end) == (b.block_start, b.block_end)
        and (a.batch, a.hidden_size) == (b.batch, b.hidden_size)
    )


def sketch_distance(a: Commitment, b: Commitment) -> SketchDistance:
    """Distance of `a`'s sketch from reference `b`'s over the positions both cover."""
    if not compatible(a, b):
        return SketchDistance(math.inf, 0)
    lo, hi = max(a.position, b.position), min(a.position + a.tokens, b.position + b.tokens)
    if hi <= lo:
        return SketchDistance(0.0, 0)
    va = a.values[lo - a.position : hi - a.position].reshape(-1, 1 + PROJECTIONS)
    vb = b.values[lo - b.position : hi - b.position].reshape(-1, 1 + PROJECTIONS)
    va, vb = va.astype(np.float64), vb.astype(np.float64)
    zero_a, zero_b = ~va.any(axis=1), ~vb.any(axis=1)
    both_padding = zero_a & zero_b
    va, vb = va[~both_padding], vb[~both_padding]
    if len(va) == 0:
        return SketchDistance(0.0, 0)
    ref_rms = np.where(zero_b[~both_padding], va[:, 0], vb[:, 0])
    # The RMS counts as one more (data-dependent) projection: a scaled update is wrong.
    energy = float(np.sum((1 + PROJECTIONS) * ref_rms**2))
    diff = float(np.sum((va - vb) ** 2))
    if not math.isfinite(diff) or not math.isfinite(energy):
        return SketchDistance(math.inf, len(va))
    return SketchDistance(math.sqrt(diff / max(energy, 1e-30)), len(va))
