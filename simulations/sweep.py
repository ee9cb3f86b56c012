"""Time to convict a cheater against the audit rate and the cheat rate.

Runs the `cheaters` scenario once per audit-rate floor (the rate a long-trusted server is
audited at; new or recently caught servers are audited on every request whatever the
floor) and tabulates, per cheat rate, how many sessions a cheater served while cheating
before its conviction, how long that took, and what the audits cost.
"""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

from simulations.scenarios import config_for

FIELDS = [
    "audit_floor",
    "cheater",
    "peers",
    "routed_to",
    "convicted",
    "median_streams_while_cheating",
    "median_hours_to_convict",
    "audit_overhead",
]


def audit_rate_sweep(
    floors: list[float], peers: int, hours: float | None, seed: int, out: Path, plots: bool
) -> list[dict]:
    from simulations.simulator import Simulation

    rows: list[dict] = []
    for floor in floors:
        cfg = replace(config_for("cheaters", peers, hours, seed), audit_floor=floor)
        sim = Simulation(cfg)
        sim.run()
        summary = sim.summary()
        for kind, c in sorted(summary["conviction"].items()):
            rows.append(
                {
                    "audit_floor": floor,
                    "cheater": kind,
                    **{k: c.get(k) for k in FIELDS[2:7]},
                    "audit_overhead": summary["audit_overhead"],
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    with (out / "audit_rate_sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    if plots:
        plot(rows, out / "audit_rate_sweep.png")
    return rows


def plot(rows: list[dict], path: Path) -> None:
    from simulations.plots import _plt

    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in sorted({r["cheater"] for r in rows}):
        mine = [r for r in rows if r["cheater"] == kind]
        xs = [r["audit_floor"] for r in mine]
        ys = [_number(r["median_streams_while_cheating"]) for r in mine]
        left.plot(xs, ys, marker="o", label=kind)
    left.set_xscale("log")
    left.set_xlabel("audit-rate floor (trusted servers)")
    left.set_ylabel("sessions served while cheating, median")
    left.set_title("Time to convict vs audit rate and cheat rate")
    left.legend(fontsize=7)
    floors = sorted({r["audit_floor"] for r in rows})
    overhead = [next(r["audit_overhead"] for r in rows if r["audit_floor"] == f) for f in floors]
    right.plot(floors, [100 * o for o in overhead], marker="o")
    right.set_xscale("log")
    right.set_xlabel("audit-rate floor (trusted servers)")
    right.set_ylabel("audit compute, % of work served")
    right.set_title("Audit overhead")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def markdown(rows: list[dict]) -> str:
    lines = [
        "| audit floor | cheater (kind, cheat rate) | routed to | convicted | sessions "
        "while cheating (median) | hours to convict (median) | audit overhead |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['audit_floor']} | {r['cheater']} | {r['routed_to']} | {r['convicted']} | "
            f"{r['median_streams_while_cheating']} | {r['median_hours_to_convict']} | "
            f"{100 * r['audit_overhead']:.2f}% |"
        )
    return "\n".join(lines)
