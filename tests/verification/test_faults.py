"""--inject-fault parsing and what each kind does to a reply."""

from __future__ import annotations

import pytest
import torch

from plexus.errors import ConfigError
from plexus.verification.compare import FULL_TOLERANCE, step_errors
from plexus.verification.faults import Fault


def test_parse() -> None:
    assert Fault.parse("noise") == Fault("noise", 1.0)
    assert Fault.parse("skip:0.25") == Fault("skip", 0.25)
    for bad in ("nois", "noise:0", "noise:1.5", "noise:x", ""):
        with pytest.raises(ConfigError):
            Fault.parse(bad)


def test_noise_and_random_are_wrong_beyond_tolerance() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 64)
    out = hidden + torch.randn(2, 5, 64)
    for kind in ("noise", "random"):
        bad = Fault(kind).corrupt(hidden, out)
        assert bad.shape == out.shape and bad.dtype == out.dtype
        assert step_errors(bad - hidden, out - hidden, None) > FULL_TOLERANCE
    assert Fault("slow").corrupt(hidden, out) is out
    assert Fault("noise", 1e-9).corrupt(hidden, out) is out  # fires on a fraction only
    assert Fault("skip").skips() and not Fault("noise").skips()
