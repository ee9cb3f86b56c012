"""What a run records, and writing it out as CSV and JSON."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class SessionRow:
    session: int
    region: str
    arrived_s: float
    outcome: str  # ok | no_route | aborted
    ttft_s: float
    tokens_per_s: float
    generated: int
    failovers: int
    open_retries: int
    hops: int
    dht_hops: int
    dht_s: float
    via_slow: bool
    via_cheater: bool


@dataclass
class SampleRow:
    t_h: float
    online: int
    active_sessions: int
    uncovered_blocks: int
    min_servers_per_block: int
    min_block_throughput: int
    convicted: int
    audits: int
    audit_overhead: float  # re-executed / served block-tokens so far


@dataclass
class CheaterRow:
    peer: str
    role: str
    cheat_rate: float
    first_served_h: float
    cheats_from_h: float
    convicted_h: float  # nan when never convicted
    time_to_convict_h: float  # from the first stream it was routed while cheating
    streams: int
    cheat_streams: int  # streams routed to it while it cheated (until convicted)
    audited: int
    audit_rate: float


@dataclass
class BalanceRow:
    t_h: float
    group: str
    peers: int
    mean_credits: float
    total_credits: float


@dataclass
class Counters:
    plans_computed: int = 0
    plans_cached: int = 0
    route_violations: int = 0
    convicted_routed: int = 0
    audits: int = 0
    fake_audits: int = 0
    audits_without_auditor: int = 0
    true_convictions: int = 0
    false_fails: int = 0
    false_convictions: int = 0
    served_block_tokens: int = 0
    reexecuted_block_tokens: int = 0
    failovers: int = 0
    open_retries: int = 0
    zero_sum_violations: int = 0
    joins: int = 0
    leaves: int = 0
    moves: int = 0


@dataclass
class Metrics:
    sessions: list[SessionRow] = field(default_factory=list)
    samples: list[SampleRow] = field(default_factory=list)
    cheaters: list[CheaterRow] = field(default_factory=list)
    balances: list[BalanceRow] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)


def write_csv(path: Path, rows: list[Any]) -> None:
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(row).items()}
            )


def read_csv(path: Path, row_type: type[T]) -> list[T]:
    """Rows written by `write_csv`, typed again from the dataclass's fields."""
    if not path.exists() or not path.read_text():
        return []
    kinds = {f.name: f.type for f in fields(row_type)}  # type: ignore[arg-type]
    parse = {"int": int, "float": float, "str": str, "bool": lambda v: v == "True"}
    with path.open() as f:
        return [
            row_type(**{k: parse[str(kinds[k])](v) for k, v in row.items()})
            for row in csv.DictReader(f)
        ]


def read_all(out: Path) -> Metrics:
    return Metrics(
        sessions=read_csv(out / "sessions.csv", SessionRow),
        samples=read_csv(out / "timeseries.csv", SampleRow),
        cheaters=read_csv(out / "cheaters.csv", CheaterRow),
        balances=read_csv(out / "balances.csv", BalanceRow),
    )


def write_all(out: Path, metrics: Metrics, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "sessions.csv", metrics.sessions)
    write_csv(out / "timeseries.csv", metrics.samples)
    write_csv(out / "cheaters.csv", metrics.cheaters)
    write_csv(out / "balances.csv", metrics.balances)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
