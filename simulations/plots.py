"""PNG plots of one run (matplotlib, imported only here: `pip install -e .[sim]`)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from simulations.metrics import Metrics


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cdf(ax, values: list[float], label: str) -> None:  # type: ignore[no-untyped-def]
    clean = sorted(v for v in values if not math.isnan(v))
    if clean:
        ax.plot(clean, [(i + 1) / len(clean) for i in range(len(clean))], label=label)


def write_plots(out: Path, metrics: Metrics, title: str) -> list[str]:
    """Write the plots; return their file names."""
    plt = _plt()
    names: list[str] = []

    def save(fig, name: str) -> None:  # type: ignore[no-untyped-def]
        fig.suptitle(f"{title}: {fig.axes[0].get_title()}", fontsize=10)
        fig.axes[0].set_title("")
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        names.append(name)

    ok = [s for s in metrics.sessions if s.outcome == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    _cdf(axes[0], [s.tokens_per_s for s in ok], "all")
    if any(s.via_slow for s in ok):
        _cdf(axes[0], [s.tokens_per_s for s in ok if s.via_slow], "via a slow peer")
        _cdf(axes[0], [s.tokens_per_s for s in ok if not s.via_slow], "no slow peer")
    axes[0].set_title("session throughput and TTFT")
    axes[0].set_xlabel("tokens/s (generation, stalls included)")
    axes[0].set_ylabel("share of sessions (CDF)")
    axes[0].legend(fontsize=8)
    _cdf(axes[1], [s.ttft_s for s in ok], "TTFT")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("time to first token (s, log)")
    save(fig, "throughput_ttft.png")

    fig, ax = plt.subplots(figsize=(10, 3.6))
    t = [r.t_h for r in metrics.samples]
    ax.plot(
        t, [r.min_servers_per_block for r in metrics.samples], label="servers on the weakest block"
    )
    ax.plot(t, [r.uncovered_blocks for r in metrics.samples], label="uncovered blocks")
    ax.plot(t, [r.online / 100 for r in metrics.samples], label="serving peers / 100", ls=":")
    ax.set_title("block coverage over time")
    ax.set_xlabel("hours")
    ax.legend(fontsize=8)
    save(fig, "coverage.png")

    fig, ax = plt.subplots(figsize=(6, 3.6))
    counts: dict[int, int] = defaultdict(int)
    for s in metrics.sessions:
        counts[s.failovers] += 1
    xs = sorted(counts)
    ax.bar(xs, [counts[x] for x in xs])
    ax.set_yscale("log")
    ax.set_title("failovers per session")
    ax.set_xlabel("failovers")
    ax.set_ylabel("sessions (log)")
    save(fig, "failovers.png")

    fig, ax = plt.subplots(figsize=(10, 3.6))
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for b in metrics.balances:
        series[b.group].append((b.t_h, b.mean_credits))
    for group, points in sorted(series.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=group)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_title("mean balance per peer group")
    ax.set_xlabel("hours")
    ax.set_ylabel("credits")
    ax.set_yscale("symlog", linthresh=1000)
    ax.legend(fontsize=8)
    save(fig, "balances.png")

    if any(row.cheat_streams > 0 for row in metrics.cheaters):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        groups: dict[str, list[float]] = defaultdict(list)
        served = [r for r in metrics.cheaters if r.cheat_streams > 0]
        for row in served:
            groups[f"{row.role} {row.cheat_rate:g}"].append(row.time_to_convict_h)
        labels = sorted(groups)
        for i, label in enumerate(labels):
            done = [v for v in groups[label] if not math.isnan(v)]
            axes[0].scatter([i] * len(done), done, s=8, alpha=0.5)
            axes[0].annotate(
                f"{len(done)}/{len(groups[label])}",
                (i, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                ha="center",
                va="top",
            )
        axes[0].set_xticks(range(len(labels)), labels, fontsize=7)
        axes[0].set_xlim(-0.5, len(labels) - 0.5)
        axes[0].set_ylabel("hours, first cheating stream\nto conviction (n convicted/routed)")
        axes[0].set_title("time to convict vs cheat rate and audit rate")
        for label in labels:
            rows = [r for r in served if f"{r.role} {r.cheat_rate:g}" == label]
            done = [r for r in rows if not math.isnan(r.time_to_convict_h)]
            axes[1].scatter(
                [r.audit_rate for r in done], [r.time_to_convict_h for r in done], s=8, label=label
            )
        axes[1].set_xlabel("share of the cheater's streams audited")
        axes[1].set_ylabel("hours to conviction")
        axes[1].legend(fontsize=7)
        save(fig, "conviction.png")
    return names
