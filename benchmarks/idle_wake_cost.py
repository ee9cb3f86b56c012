"""What a process pays for the first work after sleeping, on this machine.

    python benchmarks/idle_wake_cost.py [--sleeps-ms 0 0.5 2 5] [--repeats 300]

A server of a swarm sleeps between its steps (it waits for the hop before it) and
single-process `generate()` never does. On some virtual machines the first operations
after a sleep run several times slower than the same operations a moment later (the
vCPU was halted; caches, TLB and branch predictors are cold on wake), which adds to
every hand-off of a distributed step. For each sleep length this prints the median time
of a small Python loop, a small torch operation and the server's finite-value check,
run once right after the sleep and once again just after (warm).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from plexus.models.finite import all_finite


def after_sleep(work: Callable[[], object], sleep_s: float, repeats: int) -> tuple[float, float]:
    """Median microseconds of `work` right after sleeping `sleep_s`, and run again."""
    first, again = [], []
    for _ in range(repeats):
        if sleep_s:
            time.sleep(sleep_s)
        a = time.perf_counter()
        work()
        b = time.perf_counter()
        work()
        c = time.perf_counter()
        first.append(b - a)
        again.append(c - b)
    return statistics.median(first) * 1e6, statistics.median(again) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleeps-ms", type=float, nargs="+", default=[0, 0.5, 2, 5])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    torch.set_num_threads(1)
    hidden = torch.randn(1, 1, 512)
    works: dict[str, Callable[[], object]] = {
        "python loop (200 adds)": lambda: sum(range(200)),
        "torch add, 512 floats": lambda: hidden + 1,
        "all_finite, 512 floats": lambda: all_finite(hidden),
    }
    for sleep_ms in args.sleeps_ms:
        for name, work in works.items():
            cold, warm = after_sleep(work, sleep_ms / 1000, args.repeats)
            if args.json:
                row = {"sleep_ms": sleep_ms, "work": name, "first_us": cold, "again_us": warm}
                print(json.dumps({k: round(v, 1) if isinstance(v, float) else v
                                  for k, v in row.items()}))  # fmt: skip
            else:
                print(f"after {sleep_ms:4.1f} ms asleep: {name:24s} {cold:7.1f} us, "
                      f"then {warm:6.1f} us")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
