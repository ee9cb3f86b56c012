"""The audit-rate sweep runs the real policy at several floors and reports per cheat rate."""

from __future__ import annotations

import csv
from pathlib import Path

from simulations.sweep import audit_rate_sweep, markdown


def test_sweep_tabulates_every_floor_and_cheat_rate(tmp_path: Path) -> None:
    rows = audit_rate_sweep([0.02, 0.5], 200, 1.0, 3, tmp_path, plots=False)
    assert {r["audit_floor"] for r in rows} == {0.02, 0.5}
    kinds = {r["cheater"] for r in rows}
    assert {"cheater 1", "cheater 0.1", "cheater 0.01"} <= kinds
    for r in rows:
        assert r["convicted"] <= r["routed_to"] <= r["peers"]
    with (tmp_path / "audit_rate_sweep.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    # A higher floor audits trusted servers more: it never costs less compute.
    overhead = {r["audit_floor"]: r["audit_overhead"] for r in rows}
    assert overhead[0.5] >= overhead[0.02]
    assert "audit floor" in markdown(rows)
