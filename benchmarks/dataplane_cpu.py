"""CPU cost of one data-plane round trip: CPU time per side, and instructions counted.

    python benchmarks/dataplane_cpu.py [--rounds 4000]            # CPU time, two processes
    python benchmarks/dataplane_cpu.py --instructions [--rounds 800]   # needs valgrind

A 4 KB request (a (1, 1, 2048) float16 tensor) echoed back, as in dataplane_bench.py.

* CPU time: the client in this process, the echo server (`_echo_server`) in another; each
  side's user + system CPU seconds per round trip (both processes' threads). On a shared
  VM this drifts with the host like every timing does.
* Instructions (`--instructions`): both ends in one process (an inline echo route), run
  under valgrind's cachegrind twice, with 10 and with 10 + `--rounds` round trips; the
  difference over `--rounds` is the instructions one round trip executes, both sides
  together. Unlike times, the count does not depend on the host's load: it varies by 2-3%
  between runs (hash seeds, garbage collection), so it tells apart versions of the code
  that differ by more than that (it does not see cache misses or system calls' time).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import trio
from dataplane_bench import process_cpu_seconds, server_process

REPO = Path(__file__).resolve().parent.parent
SHAPE = (1, 1, 2048)  # float16: 4096 bytes
WARM_UP = 200


async def two_processes(rounds: int) -> None:
    from plexus.identity import Identity
    from plexus.p2p.dataplane import Message, connect

    small = torch.randn(SHAPE).to(torch.float16)
    with server_process(["-m", "plexus.p2p.dataplane._echo_server"]) as info:
        identity = Identity.generate(os.urandom(32))
        async with connect(identity, (info["host"], info["port"]), info["peer_id"]) as conn:
            for _ in range(WARM_UP):
                await conn.request(Message("echo", {}, [small]), timeout=10)
            client_cpu, server_cpu = time.process_time(), process_cpu_seconds(info["pid"])
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                await conn.request(Message("echo", {}, [small]), timeout=10)
                times.append(time.perf_counter() - start)
            client_cpu = time.process_time() - client_cpu
            server_cpu = process_cpu_seconds(info["pid"]) - server_cpu
    client_us, server_us = client_cpu / rounds * 1e6, server_cpu / rounds * 1e6
    print(
        f"4 KB round trip: median {statistics.median(times) * 1e3:.3f} ms; CPU per round "
        f"trip: client {client_us:.0f} us, server {server_us:.0f} us"
    )


async def one_process(rounds: int) -> None:
    """`rounds` round trips between a client and a server in this process."""
    from plexus.identity import Identity
    from plexus.p2p.dataplane import Message, connect
    from plexus.p2p.dataplane.router import Router
    from plexus.p2p.dataplane.server import serve_dataplane

    router = Router()

    @router.route("echo", inline=True)
    async def echo(peer_id: str, message: Message) -> Message:
        return Message("echo", message.fields, message.tensors)

    small = torch.randn(SHAPE).to(torch.float16)
    server_identity = Identity.generate(os.urandom(32))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_dataplane, server_identity, "127.0.0.1", 0, router)
        address = ("127.0.0.1", server.port)
        client_identity = Identity.generate(os.urandom(32))
        async with connect(client_identity, address, server_identity.peer_id_str) as conn:
            for _ in range(rounds):
                await conn.request(Message("echo", {}, [small]))
        nursery.cancel_scope.cancel()


def counted_instructions(rounds: int) -> int:
    output = subprocess.run(
        [
            "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
            sys.executable, __file__, "--inner", str(rounds),
        ],
        capture_output=True, text=True, check=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    match = re.search(r"I\s+refs:\s+([\d,]+)", output.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{output.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--instructions", action="store_true", help="count with valgrind")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:
        trio.run(one_process, args.inner)
        return 0
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind (e.g. apt install valgrind)")
        rounds = args.rounds or 800
        base = counted_instructions(10)
        more = counted_instructions(10 + rounds)
        print(f"instructions per 4 KB round trip (both sides): {(more - base) / rounds:,.0f}")
        return 0
    trio.run(two_processes, args.rounds or 4000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
