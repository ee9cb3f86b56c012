"""The adaptive audit rate: BOINC-style, slow to trust and quick to distrust.

Pure functions, no I/O, so the simulation and the client share one definition:

* a server is audited on **every** request while it is new (fewer than `TRUST_AFTER`
  consecutive clean audits) or was recently caught;
* after that with probability `TRUST_AFTER / consecutive_clean`, i.e. ~1/n like BOINC's
  adaptive replication, never below `floor` (default 2%).

With q = audit probability, d = detection probability of one audit and f = the fraction of
requests a server cheats on, the server survives n requests with probability
(1 - q d f)^n (docs/verification.md works the numbers).
"""

from __future__ import annotations

import math

TRUST_AFTER = 10
"""Consecutive clean audits before a server is audited less than every time."""
DEFAULT_FLOOR = 0.02
RECENTLY_CAUGHT_S = 24 * 3600.0
"""How long a failed audit keeps a server on 'audit every request'."""


def audit_probability(
    consecutive_clean: int, recently_caught: bool, *, floor: float = DEFAULT_FLOOR
) -> float:
    """Probability of auditing one request of a server with this record.

    1.0 while the server is new (`consecutive_clean` < `TRUST_AFTER`) or was
    `recently_caught`; then `TRUST_AFTER / consecutive_clean`, down to `floor`.
    """
    if isinstance(consecutive_clean, bool) or not isinstance(consecutive_clean, int):
        raise TypeError("consecutive_clean must be an int")
    if consecutive_clean < 0:
        raise ValueError("consecutive_clean must be >= 0")
    if not (0.0 < floor <= 1.0) or math.isnan(floor):
        raise ValueError("floor must be in (0, 1]")
    if recently_caught or consecutive_clean < TRUST_AFTER:
        return 1.0
    return max(floor, min(1.0, TRUST_AFTER / consecutive_clean))


def expected_audits(requests: int, *, floor: float = DEFAULT_FLOOR) -> float:
    """Expected audits of an honest server over its first `requests` requests."""
    return sum(audit_probability(n, False, floor=floor) for n in range(max(0, requests)))


def survival_probability(q: float, detection: float, cheat_fraction: float, requests: int) -> float:
    """Chance that a server cheating on `cheat_fraction` of requests, audited with
    probability `q` and caught by an audit with probability `detection`, survives
    `requests` requests: (1 - q d f)^n."""
    for name, value in (("q", q), ("detection", detection), ("cheat_fraction", cheat_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]")
    return (1.0 - q * detection * cheat_fraction) ** max(0, requests)


def requests_to_catch(
    q: float, detection: float, cheat_fraction: float, confidence: float = 0.99
) -> int:
    """Requests after which such a cheater is caught with probability `confidence`."""
    p = q * detection * cheat_fraction
    if p <= 0.0:
        raise ValueError("a server never audited or never cheating is never caught")
    if p >= 1.0:
        return 1
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - p))
