"""Data plane vs a libp2p stream: latency and throughput between two processes on loopback.

    python benchmarks/dataplane_bench.py [--rounds 2000] [--big-rounds 15] [--only dataplane]

Measures, for each transport, with the server in a separate process:
  * the round trip of a 4 KB message (a (1, 1, 2048) float16 tensor echoed back): median, p90;
  * one-way throughput of a 16 MiB message (a 4 Mi-element float32 tensor, answered with a
    few-byte acknowledgement): median time per message, in MB/s (10^6 bytes/s);
  * streamed throughput: 8 one-way 16 MiB messages back to back, then one round trip,
    with the CPU seconds per GB each process spent on it (both processes' user + system).
The libp2p side is a py-libp2p host (TCP + Noise + yamux, max_connections_per_peer=1, no
mDNS/UPnP, 127.0.0.1 only) with a length-prefixed echo protocol and a read-exact loop.
Targets for the data plane: 4 KB median <= 0.5 ms, 16 MiB >= 300 MB/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import trio

if TYPE_CHECKING:
    from libp2p.abc import IHost, INetStream

SMALL_SHAPE = (1, 1, 2048)  # float16: 4096 bytes
BIG_ELEMENTS = 4 * 1024 * 1024  # float32: 16 MiB
BIG_BYTES = BIG_ELEMENTS * 4
STREAMED = 8
LIBP2P_PROTOCOL = "/plexus-bench/1.0.0"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Figures:
    transport: str
    small_median_ms: float
    small_p90_ms: float
    big_mb_s: float
    streamed_mb_s: float
    client_cpu_s_per_gb: float
    server_cpu_s_per_gb: float

    def line(self) -> str:
        return (
            f"{self.transport:<34} 4 KB round trip median {self.small_median_ms:6.3f} ms, "
            f"p90 {self.small_p90_ms:6.3f} ms | 16 MiB one-way {self.big_mb_s:6.0f} MB/s, "
            f"streamed {self.streamed_mb_s:6.0f} MB/s | CPU s/GB client "
            f"{self.client_cpu_s_per_gb:.1f}, server {self.server_cpu_s_per_gb:.1f}"
        )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    name: str,
    server_pid: int,
    round_trip_small: Callable[[], Awaitable[None]],
    send_big: Callable[[], Awaitable[None]],
    stream_big: Callable[[int], Awaitable[None]],
    rounds: int,
    big_rounds: int,
) -> Figures:
    for _ in range(min(200, rounds)):
        await round_trip_small()
    small = []
    for _ in range(rounds):
        start = time.perf_counter()
        await round_trip_small()
        small.append(time.perf_counter() - start)
    await send_big()
    big = []
    for _ in range(big_rounds):
        start = time.perf_counter()
        await send_big()
        big.append(time.perf_counter() - start)
    client_cpu, server_cpu = time.process_time(), process_cpu_seconds(server_pid)
    start = time.perf_counter()
    await stream_big(STREAMED)
    streamed = time.perf_counter() - start
    gigabytes = STREAMED * BIG_BYTES / 1e9
    return Figures(
        name,
        statistics.median(small) * 1e3,
        percentile(small, 0.9) * 1e3,
        BIG_BYTES / statistics.median(big) / 1e6,
        STREAMED * BIG_BYTES / streamed / 1e6,
        (time.process_time() - client_cpu) / gigabytes,
        (process_cpu_seconds(server_pid) - server_cpu) / gigabytes,
    )


@contextmanager
def server_process(argv: list[str]) -> Iterator[dict]:
    """Start a server that prints one JSON line describing itself, and stop it after."""
    process = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"server {argv} exited without announcing itself")
        yield {**json.loads(line), "pid": process.pid}
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- the data plane -------------------------------------------------------------------------


async def bench_dataplane(rounds: int, big_rounds: int) -> Figures:
    from plexus.identity import Identity
    from plexus.p2p.dataplane import Message, connect

    small = torch.randn(SMALL_SHAPE).to(torch.float16)
    big = torch.randn(BIG_ELEMENTS)
    with server_process(["-m", "plexus.p2p.dataplane._echo_server"]) as info:
        identity = Identity.generate(os.urandom(32))
        async with connect(identity, (info["host"], info["port"]), info["peer_id"]) as conn:

            async def round_trip_small() -> None:
                reply = await conn.request(Message("echo", {}, [small]), timeout=10)
                assert reply.tensors[0].shape == small.shape

            async def send_big() -> None:
                await conn.request(Message("discard", {}, [big]), timeout=60)

            async def stream_big(count: int) -> None:
                for _ in range(count):
                    await conn.send(Message("discard", {}, [big]))
                await conn.request(Message("echo"), timeout=60)

            return await measure(
                "data plane (TCP+X25519/ChaCha20)",
                info["pid"],
                round_trip_small,
                send_big,
                stream_big,
                rounds,
                big_rounds,
            )


# --- libp2p ---------------------------------------------------------------------------------


def libp2p_host(listen: str) -> IHost:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.security.noise.transport import Transport as NoiseTransport

    key_pair = create_new_key_pair(os.urandom(32))
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE: noise},
        muxer_preference="YAMUX",
        listen_addrs=[multiaddr.Multiaddr(listen)],
        enable_mDNS=False,
        enable_upnp=False,
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


async def read_exactly(stream: INetStream, count: int) -> bytearray:
    """libp2p's own read_exactly gives up after 100 partial reads (16 MiB fails)."""
    data = bytearray()
    while len(data) < count:
        chunk = await stream.read(count - len(data))
        if not chunk:
            raise EOFError(f"stream ended after {len(data)} of {count} bytes")
        data += chunk
    return data


async def libp2p_serve() -> None:
    listen = "/ip4/127.0.0.1/tcp/0"
    host = libp2p_host(listen)

    async def handle(stream: INetStream) -> None:
        try:
            while True:
                header = await read_exactly(stream, 4)
                payload = await read_exactly(stream, int.from_bytes(header, "big"))
                reply = bytes(payload) if payload[:1] == b"E" else b"ok"
                await stream.write(len(reply).to_bytes(4, "big") + reply)
        except Exception:  # an escaping exception tears down the whole libp2p host
            await stream.reset()

    import multiaddr

    async with host.run(listen_addrs=[multiaddr.Multiaddr(listen)]):
        host.set_stream_handler(LIBP2P_PROTOCOL, handle)
        address = f"{host.get_addrs()[0]}"
        if "/p2p/" not in address:
            address += f"/p2p/{host.get_id().to_string()}"
        print(json.dumps({"address": address}), flush=True)
        await trio.sleep_forever()


async def bench_libp2p(rounds: int, big_rounds: int) -> Figures:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    small = b"E" + bytes(4095)
    big = b"D" + bytes(BIG_BYTES - 1)
    with server_process([str(Path(__file__).resolve()), "--libp2p-server"]) as info:
        listen = "/ip4/127.0.0.1/tcp/0"
        host = libp2p_host(listen)
        async with host.run(listen_addrs=[multiaddr.Multiaddr(listen)]):
            peer = info_from_p2p_addr(multiaddr.Multiaddr(info["address"]))
            await host.connect(peer)
            stream = await host.new_stream(peer.peer_id, [LIBP2P_PROTOCOL])

            async def exchange(payload: bytes) -> bytes:
                await stream.write(len(payload).to_bytes(4, "big") + payload)
                header = await read_exactly(stream, 4)
                return bytes(await read_exactly(stream, int.from_bytes(header, "big")))

            async def round_trip_small() -> None:
                assert len(await exchange(small)) == len(small)

            async def send_big() -> None:
                await exchange(big)

            async def stream_big(count: int) -> None:
                for _ in range(count):
                    await exchange(big)  # yamux has no one-way messages here: ack each

            figures = await measure(
                "libp2p stream (TCP+Noise+yamux)",
                info["pid"],
                round_trip_small,
                send_big,
                stream_big,
                rounds,
                big_rounds,
            )
            await stream.close()
            return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="4 KB round trips per transport")
    parser.add_argument("--big-rounds", type=int, default=15, help="16 MiB messages timed")
    parser.add_argument("--only", choices=["dataplane", "libp2p"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--libp2p-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.libp2p_server:
        trio.run(libp2p_serve)
        return
    torch.set_num_threads(1)
    results = []
    if args.only in (None, "dataplane"):
        results.append(trio.run(bench_dataplane, args.rounds, args.big_rounds))
        print(results[-1].line(), flush=True)
    if args.only in (None, "libp2p"):
        results.append(trio.run(bench_libp2p, max(200, args.rounds // 4), args.big_rounds))
        print(results[-1].line(), flush=True)
    if args.json:
        print(json.dumps([vars(result) for result in results], indent=1))


if __name__ == "__main__":
    main()
