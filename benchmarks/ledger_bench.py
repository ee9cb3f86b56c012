"""Ledger throughput: receipts verified (both signatures) and durably stored per second.

    python benchmarks/ledger_bench.py [--receipts 20000] [--batch 1000] [--repeats 3]
                                      [--workers 1 2] [--json]

Receipts are signed beforehand (not timed): 4 receipts per session (seq 1..4, rising
cumulative amounts), 16 servers x 64 clients. Measured on a fresh SQLite file each time
(WAL, synchronous=FULL, as in production):

  * verify:   parse + both Ed25519 signatures, one process, nothing stored;
  * store:    `LedgerStore.add_receipts` in batches (parse, both signatures, stream checks,
              insert, commit + fsync), with 1 process and with n processes sharing the
              signature checks (`verify_workers`);
  * single:   `add_receipt` one at a time (one commit and fsync per receipt);
  * balances: `compute_balances` over everything stored.

Target: >= 5,000 receipts/s stored on SQLite on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import receipts
from ledger.receipts import Receipt, issue
from ledger.store import LedgerStore

NETWORK = "plexus-bench"
MODEL = "meta-llama/Meta-Llama-3-8B"


def make_receipts(n: int) -> list[bytes]:
    servers = [nacl.signing.SigningKey(bytes([1, i]) + bytes(30)) for i in range(16)]
    clients = [nacl.signing.SigningKey(bytes([2, i]) + bytes(30)) for i in range(64)]
    out: list[bytes] = []
    for i in range(n):
        session, seq = i // 4, i % 4 + 1
        server, client = servers[session % 16], clients[(session // 16) % 64]
        receipt = Receipt(
            NETWORK, MODEL, 0, 31, session.to_bytes(16, "big"), seq, 200, 16 * seq,
            (200 + 16 * seq) * 32 * 1000, os.urandom(32), os.urandom(32),
            1_700_000_000 + i, bytes(server.verify_key), bytes(client.verify_key),
        )  # fmt: skip
        out.append(issue(receipt, server, client).encode())
    return out


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_verify(items: list[bytes]) -> float:
    start = time.perf_counter()
    for data in items:
        receipts.parse(data, NETWORK)
    return rate(len(items), time.perf_counter() - start)


def bench_store(items: list[bytes], batch: int, workers: int) -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder:
        store = LedgerStore(f"sqlite:///{folder}/ledger.sqlite", NETWORK, verify_workers=workers)
        store.add_receipts(items[:batch])  # warm up: worker processes, caches
        rest = items[batch:]
        start = time.perf_counter()
        stored = 0
        for i in range(0, len(rest), batch):
            stored += len(store.add_receipts(rest[i : i + batch]).added)
        elapsed = time.perf_counter() - start
        assert stored == len(rest), f"stored {stored} of {len(rest)}"
        start = time.perf_counter()
        accounts = store.balances()
        balance_s = time.perf_counter() - start
        store.close()
    return rate(len(rest), elapsed), {"balances_s": balance_s, "accounts": len(accounts)}


def bench_single(items: list[bytes]) -> float:
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder:
        store = LedgerStore(f"sqlite:///{folder}/ledger.sqlite", NETWORK)
        start = time.perf_counter()
        for data in items:
            store.add_receipt(data)
        elapsed = time.perf_counter() - start
        store.close()
        return rate(len(items), elapsed)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "best": max(values), "worst": min(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--single", type=int, default=300, help="receipts for the one-by-one run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    items = make_receipts(args.receipts)
    signing_s = time.perf_counter() - t0
    results: dict[str, object] = {
        "command": " ".join(["python", "benchmarks/ledger_bench.py", *sys.argv[1:]]),
        "receipts": args.receipts,
        "batch": args.batch,
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg()[0],
        "python": platform.python_version(),
        "signing_both_per_s": rate(args.receipts, signing_s),
        "verify_per_s": summary([bench_verify(items) for _ in range(args.repeats)]),
    }
    for workers in args.workers:
        runs = [bench_store(items, args.batch, workers) for _ in range(args.repeats)]
        results[f"store_per_s_workers_{workers}"] = summary([r for r, _ in runs])
        results["balances_s"] = runs[-1][1]["balances_s"]
    results["single_add_receipt_per_s"] = bench_single(items[: args.single])
    results["load_average_after"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    load = results["load_average_before"]
    print(
        f"ledger bench: {args.receipts} receipts, batches of {args.batch}, "
        f"{args.repeats} repeats, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    for key, value in results.items():
        if isinstance(value, dict):
            print(
                f"  {key:<28} median {value['median']:>9,.0f}/s   "
                f"best {value['best']:>9,.0f}/s   worst {value['worst']:>9,.0f}/s"
            )
        elif isinstance(value, float) and key.endswith("per_s"):
            print(f"  {key:<28} {value:>9,.0f}/s")
    print(f"  balances over {args.receipts} receipts: {results['balances_s'] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
