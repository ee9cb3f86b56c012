"""The verification layer's audit-rate policy, imported lazily.

`plexus.verification.policy.audit_probability(consecutive_clean, recently_caught, *, floor)`
is the real policy. Until that module exists the simulator falls back to a stand-in with the
same signature and the BOINC rule the ledger documents (audit everything until 10 clean
results, then ~1/consecutive_clean, never below `floor`, everything again after a failure);
every run records which one it used (`policy_source` in summary.json).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache

AuditProbability = Callable[..., float]
REAL = "plexus.verification.policy.audit_probability"
STAND_IN = "simulations.audit_policy.stand_in"


def stand_in(consecutive_clean: int, recently_caught: bool, *, floor: float = 0.02) -> float:
    if recently_caught or consecutive_clean < 10:
        return 1.0
    return max(floor, min(1.0, 1.0 / consecutive_clean))


@cache
def load() -> tuple[AuditProbability, str]:
    """(audit_probability, where it came from)."""
    try:
        module = importlib.import_module("plexus.verification.policy")
    except ImportError:
        return stand_in, STAND_IN
    return module.audit_probability, REAL
