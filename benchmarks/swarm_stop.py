"""Seconds for a local swarm's servers to start and to exit after SIGTERM, all at once.

    python benchmarks/swarm_stop.py [--servers 5] [--rounds 2] [--json]

Starts a bootstrap peer and `--servers` `plexus serve` processes of plexus-tiny (spans
cycling over the 8 blocks) on 127.0.0.1, in parallel as the e2e tests and `plexus demo`
do, waits 3 s, SIGTERMs every server at once and times each exit (withdrawal, shutdown,
process end), then the bootstrap's. Every test teardown and every demo pays this.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from plexus.local_swarm import LocalSwarm
from plexus.models.tiny import ensure_tiny_model

SPANS = ["0-3", "4-7", "0-2", "3-5", "6-7"]


def one_round(root: Path, folder: Path, servers: int) -> dict[str, float]:
    spans = [SPANS[i % len(SPANS)] for i in range(servers)]
    with LocalSwarm(root, log_level="WARNING") as swarm:
        swarm.start_bootstrap()
        began = time.monotonic()
        with ThreadPoolExecutor(servers) as pool:
            procs = list(pool.map(lambda span: swarm.start_server(str(folder), span), spans))
        started = time.monotonic() - began
        time.sleep(3.0)
        began = time.monotonic()
        for proc in procs:
            proc.signal(signal.SIGTERM)
        exits = []
        for proc in procs:
            assert proc.wait(60) == 0, f"{proc.name} did not exit 0"
            exits.append(time.monotonic() - began)
        assert swarm.bootstrap is not None
        swarm.bootstrap.signal(signal.SIGTERM)
        swarm.bootstrap.wait(60)
        return {
            "start_s": started,
            "last_server_exit_s": max(exits),
            "median_server_exit_s": statistics.median(exits),
            "bootstrap_exit_s": time.monotonic() - began,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=5, help="servers to start (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="swarms to start and stop")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = ensure_tiny_model(Path(tmp) / "tiny")
        rounds = [
            one_round(Path(tmp) / f"swarm{i}", folder, args.servers) for i in range(args.rounds)
        ]
    if args.json:
        print(json.dumps({"servers": args.servers, "rounds": rounds}))
        return
    for i, r in enumerate(rounds):
        print(
            f"round {i + 1}: {args.servers} servers started in {r['start_s']:.1f} s; after "
            f"SIGTERM the last exited in {r['last_server_exit_s']:.2f} s (median "
            f"{r['median_server_exit_s']:.2f}), the bootstrap by {r['bootstrap_exit_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
