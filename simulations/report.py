"""The markdown section of docs/simulations.md for one run, from its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulations.scenarios import Scenario


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _dht(summary: dict[str, Any]) -> list[str]:
    d = summary.get("dht")
    if not d:
        return []
    return [
        f"| DHT lookup: mean hops; latency p50 / p90 / p99 (s) | {d['hops_mean']}; "
        f"{_fmt(d['latency_p50_s'])} / {_fmt(d['latency_p90_s'])} / {_fmt(d['latency_p99_s'])} |"
    ]


def section(scenario: Scenario, summary: dict[str, Any], images: list[str], rel: str) -> str:
    c = summary["counters"]
    lines = [
        f"### {scenario.title} (`{scenario.name}`)",
        "",
        scenario.question,
        "",
        f"`python -m simulations run {scenario.name} --peers {summary['peers']} "
        f"--hours {summary['hours']:g} --seed {summary['seed']}`: "
        f"**{summary.get('total_seconds', summary['wall_seconds']):.0f} s** wall time "
        f"(plus ~8 s of imports), {summary['sessions']:,} sessions.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| outcomes | {', '.join(f'{k} {v:,}' for k, v in sorted(summary['outcomes'].items()))} |",
        f"| time to first token p50 / p90 / p99 (s) | {_fmt(summary['ttft_s']['p50'])} / "
        f"{_fmt(summary['ttft_s']['p90'])} / {_fmt(summary['ttft_s']['p99'])} |",
        f"| tokens/s p10 / p50 / p90 | {_fmt(summary['tokens_per_s']['p10'])} / "
        f"{_fmt(summary['tokens_per_s']['p50'])} / {_fmt(summary['tokens_per_s']['p90'])} |",
        f"| failovers per session (mean / max) | {_fmt(summary['failovers_per_session']['mean'])} "
        f"/ {summary['failovers_per_session']['max']} |",
        f"| sessions with a failover | {summary['sessions_with_failover']:,} |",
        *_dht(summary),
        f"| open retries (stale view, full server) | {c['open_retries']:,} |",
        f"| uncovered blocks after warm-up (min / max) | "
        f"{summary['min_uncovered_blocks_after_warmup']} / "
        f"{summary['max_uncovered_blocks_after_warmup']} |",
        f"| audits / fake audits / no auditor found | {c['audits']:,} / {c['fake_audits']:,} / "
        f"{c['audits_without_auditor']:,} |",
        f"| audit overhead (re-executed / served block-tokens) | "
        f"{summary['audit_overhead'] * 100:.3f}% |",
        f"| convictions true / false; false FAIL verdicts | {c['true_convictions']} / "
        f"{c['false_convictions']}; {c['false_fails']} |",
        f"| invariant breaches (uncovered or dead hop / convicted routed / zero-sum) | "
        f"{c['route_violations']} / {c['convicted_routed']} / {c['zero_sum_violations']} |",
        f"| plans computed / answered from cache | {c['plans_computed']:,} / "
        f"{c['plans_cached']:,} |",
    ]
    if summary.get("tokens_per_s_median_via_slow") is not None:
        lines.append(
            f"| median tokens/s via a slow peer / not | "
            f"{_fmt(summary['tokens_per_s_median_via_slow'])} / "
            f"{_fmt(summary['tokens_per_s_median_not_via_slow'])} |"
        )
    if summary.get("sessions_via_cheater"):
        lines.append(
            f"| sessions through a cheating server / their median tokens/s | "
            f"{summary['sessions_via_cheater']:,} / "
            f"{_fmt(summary['tokens_per_s_median_via_cheater'])} |"
        )
    if "share_of_them_given_any_stream" in summary:
        lines.append(
            f"| peers that served / share of them ever routed to | "
            f"{summary['peers_that_served']:,} / "
            f"{summary['share_of_them_given_any_stream'] * 100:.1f}% |"
        )
    for group, info in summary["conviction"].items():
        lines.append(
            f"| {group}: joined / routed to while cheating / convicted / median hours and "
            f"streams until convicted | {info['peers']} / {info['routed_to']} / "
            f"{info['convicted']} / {_fmt(info['median_hours_to_convict'])} h, "
            f"{_fmt(info.get('median_streams_while_cheating'))} streams |"
        )
    balances = ", ".join(
        f"{g} {_fmt(v)}" for g, v in sorted(summary["final_mean_balance_credits"].items())
    )
    lines += [f"| mean balance at the end (credits) | {balances} |", ""]
    lines += [f"![{name}]({rel}/{name})" for name in images]
    lines.append("")
    return "\n".join(lines)


def write_section(out: Path, text: str) -> None:
    (out / "section.md").write_text(text)
