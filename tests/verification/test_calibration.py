"""Zero false convictions over >= 1,000 honest audits (fp32/bf16, batch sizes 1-8), and
the same audits catch the `noise` fault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from plexus.verification import calibration
from plexus.verification.faults import Fault


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices: threads only contend (10x slower on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_no_false_convictions_in_honest_audits(model_dirs: dict[str, Path]) -> None:
    folders = {name: str(model_dirs[name]) for name in ("tiny", "qwen2")}
    stats = calibration.run(folders, decode=8)
    assert stats.audits >= 1000
    assert stats.full_flags == 0, stats.max_full
    assert stats.sketch_flags == 0, stats.max_sketch_ratio
    print(f"\n{stats.audits} honest audits: max full error {stats.max_full:.4f}, "
          f"max sketch distance/threshold {stats.max_sketch_ratio:.3f}")  # fmt: skip


def test_noise_is_caught(model_dirs: dict[str, Path]) -> None:
    stats = calibration.run(
        {"tiny": str(model_dirs["tiny"])}, batches=[1, 3], fault=Fault("noise"), seed=1
    )
    assert stats.full_flags == stats.audits  # the client sees every noisy step
    assert stats.sketch_flags >= 0.7 * stats.audits  # the checker most of single tokens
