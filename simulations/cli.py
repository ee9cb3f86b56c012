"""`python -m simulations run NAME | all`, `list`, and `docs` (refresh docs/simulations.md)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from simulations.scenarios import SCENARIOS, config_for

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "simulations" / "results"
DOC = ROOT / "docs" / "simulations.md"


def run_one(name: str, peers: int, hours: float | None, seed: int, out: Path, plots: bool) -> dict:
    from simulations.metrics import write_all
    from simulations.report import section, write_section
    from simulations.simulator import Simulation

    started = time.perf_counter()
    cfg = config_for(name, peers, hours, seed)
    sim = Simulation(cfg)
    metrics = sim.run()
    summary = sim.summary()
    images: list[str] = []
    if plots:
        from simulations.plots import write_plots

        out.mkdir(parents=True, exist_ok=True)
        images = write_plots(out, metrics, SCENARIOS[name].title)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    write_all(out, metrics, summary)
    rel = (
        Path("..") / out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    )
    write_section(out, section(SCENARIOS[name], summary, images, rel.as_posix()))
    return summary


def _dht_from_csv(path: Path) -> dict:
    """DHT figures of a run whose summary predates them, from its sessions.csv."""
    import csv

    from simulations.summary import dht_stats

    with path.open() as f:
        rows = list(csv.DictReader(f))
    return dht_stats([int(r["dht_hops"]) for r in rows], [float(r["dht_s"]) for r in rows])


def _rel(out: Path) -> str:
    """How docs/simulations.md links to files in `out`."""
    where = out.resolve()
    return (
        (Path("..") / where.relative_to(ROOT)).as_posix()
        if where.is_relative_to(ROOT)
        else str(where)
    )


def refresh_docs(results: Path, doc: Path) -> list[str]:
    """Replace each `<!-- scenario:NAME -->...<!-- /scenario:NAME -->` block by the section
    rendered from the run's summary.json and plots; returns the scenarios updated."""
    from simulations.report import section, write_section

    text = doc.read_text()
    done = []
    for name in SCENARIOS:
        out = results / name
        if (out / "summary.json").exists():
            summary = json.loads((out / "summary.json").read_text())
            if "dht" not in summary and (out / "sessions.csv").exists():
                summary["dht"] = _dht_from_csv(out / "sessions.csv")
                (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
            images = sorted(p.name for p in out.glob("*.png"))
            write_section(out, section(SCENARIOS[name], summary, images, _rel(out)))
        part = out / "section.md"
        tag = re.escape(name)
        pattern = re.compile(rf"(<!-- scenario:{tag} -->\n).*?(<!-- /scenario:{tag} -->)", re.S)
        if part.exists() and pattern.search(text):
            body = part.read_text()
            text = pattern.sub(lambda m, b=body: m.group(1) + b + m.group(2), text)
            done.append(name)
    doc.write_text(text)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario, or all of them")
    run.add_argument("scenario", choices=[*SCENARIOS, "all"])
    run.add_argument("--peers", type=int, default=10_000)
    run.add_argument("--hours", type=float, default=None, help="default: the scenario's")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", type=Path, default=None, help=f"default: {RESULTS}/NAME")
    run.add_argument("--no-plots", action="store_true")
    sub.add_parser("list", help="list the scenarios")
    replot = sub.add_parser("plot", help="redraw the plots of finished runs from their CSVs")
    replot.add_argument("--results", type=Path, default=RESULTS)
    sweep = sub.add_parser(
        "sweep", help="time to convict vs audit rate and cheat rate (cheaters scenario)"
    )
    sweep.add_argument("--floors", type=float, nargs="+", default=[0.005, 0.02, 0.05, 0.2])
    sweep.add_argument("--peers", type=int, default=2_000)
    sweep.add_argument("--hours", type=float, default=None)
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--out", type=Path, default=RESULTS / "audit-sweep")
    sweep.add_argument("--no-plots", action="store_true")
    docs = sub.add_parser("docs", help="copy each run's section into docs/simulations.md")
    docs.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if args.command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:12} {s.title}: {s.question}")
        return 0
    if args.command == "plot":
        from simulations.metrics import read_all
        from simulations.plots import write_plots

        for name, scenario in SCENARIOS.items():
            out = args.results / name
            if (out / "sessions.csv").exists():
                print(name, write_plots(out, read_all(out), scenario.title))
        return 0
    if args.command == "sweep":
        from simulations.sweep import audit_rate_sweep, markdown

        rows = audit_rate_sweep(
            args.floors, args.peers, args.hours, args.seed, args.out, not args.no_plots
        )
        print(markdown(rows))
        return 0
    if args.command == "docs":
        print("updated:", ", ".join(refresh_docs(args.results, DOC)) or "nothing")
        return 0
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for name in names:
        out = args.out / name if args.out and len(names) > 1 else args.out or RESULTS / name
        summary = run_one(name, args.peers, args.hours, args.seed, out, not args.no_plots)
        print(
            f"{name}: {summary['sessions']} sessions, {summary['wall_seconds']} s simulating, "
            f"{summary['total_seconds']} s in all -> {out}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
