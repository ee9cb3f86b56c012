"""Headline figures of a finished run, as a JSON-ready dict."""

from __future__ import annotations

import math
from dataclasses import asdict
from statistics import median
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulations.simulator import Simulation


def _pct(values: list[float], q: float) -> float:
    clean = sorted(v for v in values if not math.isnan(v))
    if not clean:
        return math.nan
    return clean[min(len(clean) - 1, int(q * len(clean)))]


def _r(x: float, digits: int = 3) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def dht_stats(hops: list[int], seconds: list[float]) -> dict[str, float | None]:
    return {
        "hops_mean": _r(sum(hops) / max(1, len(hops)), 2),
        "latency_p50_s": _r(_pct(seconds, 0.5)),
        "latency_p90_s": _r(_pct(seconds, 0.9)),
        "latency_p99_s": _r(_pct(seconds, 0.99)),
    }


def summarise(sim: Simulation) -> dict[str, Any]:
    m, c, cfg = sim.metrics, sim.metrics.counters, sim.cfg
    ok = [s for s in m.sessions if s.outcome == "ok"]
    ttft = [s.ttft_s for s in ok]
    rate = [s.tokens_per_s for s in ok]
    fails = [s.failovers for s in m.sessions]
    by_rate: dict[str, dict[str, Any]] = {}
    for row in m.cheaters:
        key = f"{row.role} {row.cheat_rate:g}"
        entry = by_rate.setdefault(
            key, {"peers": 0, "used": 0, "convicted": 0, "hours": [], "streams": []}
        )
        entry["peers"] += 1
        if row.cheat_streams == 0:
            continue  # never routed to while cheating: nothing to catch, nothing earned
        entry["used"] += 1
        entry["streams"].append(row.cheat_streams)
        if not math.isnan(row.time_to_convict_h):
            entry["convicted"] += 1
            entry["hours"].append(row.time_to_convict_h)
    convict = {
        k: {
            "peers": v["peers"],
            "routed_to": v["used"],
            "convicted": v["convicted"],
            "median_hours_to_convict": _r(median(v["hours"])) if v["hours"] else None,
            "median_streams_while_cheating": median(v["streams"]) if v["streams"] else None,
        }
        for k, v in sorted(by_rate.items())
    }
    last = {}
    if m.balances:
        t = max(b.t_h for b in m.balances)
        last = {b.group: round(b.mean_credits, 1) for b in m.balances if b.t_h == t}
    outcomes: dict[str, int] = {}
    for s in m.sessions:
        outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
    slow = [s.tokens_per_s for s in ok if s.via_slow]
    fast = [s.tokens_per_s for s in ok if not s.via_slow]
    joined = [p for p in sim.peers if p.joined_at is not None]
    return {
        "peers": cfg.peers,
        "peers_that_served": len(joined),
        "share_of_them_given_any_stream": _r(
            sum(1 for p in joined if p.streams) / max(1, len(joined))
        ),
        "hours": cfg.hours,
        "seed": cfg.seed,
        "wall_seconds": round(sim.wall_s, 1),
        "audit_policy": sim.auditor.policy_source,
        "sessions": len(m.sessions),
        "outcomes": outcomes,
        "ttft_s": {f"p{q}": _r(_pct(ttft, q / 100)) for q in (50, 90, 99)},
        "tokens_per_s": {f"p{q}": _r(_pct(rate, q / 100)) for q in (10, 50, 90)},
        "tokens_per_s_median_via_slow": _r(_pct(slow, 0.5)),
        "tokens_per_s_median_not_via_slow": _r(_pct(fast, 0.5)),
        "tokens_per_s_median_via_cheater": _r(
            _pct([x.tokens_per_s for x in ok if x.via_cheater], 0.5)
        ),
        "sessions_via_cheater": sum(1 for x in m.sessions if x.via_cheater),
        "dht": dht_stats([x.dht_hops for x in m.sessions], [x.dht_s for x in m.sessions]),
        "failovers_per_session": {
            "mean": _r(sum(fails) / max(1, len(fails))),
            "max": max(fails, default=0),
        },
        "sessions_with_failover": sum(1 for f in fails if f),
        "min_uncovered_blocks_after_warmup": min(
            (s.uncovered_blocks for s in m.samples if s.t_h >= cfg.warmup_hours), default=0
        ),
        "max_uncovered_blocks_after_warmup": max(
            (s.uncovered_blocks for s in m.samples if s.t_h >= cfg.warmup_hours), default=0
        ),
        "audit_overhead": _r(c.reexecuted_block_tokens / max(1, c.served_block_tokens), 5),
        "conviction": convict,
        "final_mean_balance_credits": last,
        "counters": asdict(c),
    }
