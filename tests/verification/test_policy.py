from __future__ import annotations

import itertools

import pytest

from plexus.verification.policy import (
    TRUST_AFTER,
    audit_probability,
    expected_audits,
    requests_to_catch,
    survival_probability,
)


def test_new_and_caught_servers_are_always_audited() -> None:
    for n in range(TRUST_AFTER):
        assert audit_probability(n, False) == 1.0
    assert audit_probability(10_000, True) == 1.0


def test_rate_decreases_to_the_floor() -> None:
    rates = [audit_probability(n, False) for n in range(TRUST_AFTER, 2000)]
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert rates[-1] == 0.02
    assert audit_probability(10**9, False, floor=0.05) == 0.05
    assert audit_probability(2 * TRUST_AFTER, False) == pytest.approx(0.5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        audit_probability(-1, False)
    with pytest.raises(ValueError):
        audit_probability(5, False, floor=0.0)
    with pytest.raises(TypeError):
        audit_probability(1.5, False)  # type: ignore[arg-type]


def test_catch_math() -> None:
    assert survival_probability(1.0, 1.0, 1.0, 1) == 0.0
    # Even at the floor (a trusted server turning bad) the targets of the notes hold.
    assert requests_to_catch(0.02, 1.0, 1.0) <= 250
    assert requests_to_catch(0.02, 1.0, 0.1) <= 2500
    # An honest server is audited far less than once per request in the long run.
    assert expected_audits(10_000) / 10_000 < 0.05
