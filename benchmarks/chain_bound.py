"""Plexus against the same 3-process chain with no Plexus in it, alternating in one run.

    python benchmarks/chain_bound.py [--rounds 8] [--dir /tmp/plexus-bench]

The topology of `distributed_throughput.py` (a client holding embeddings and LM head, two
server processes holding half the blocks each, the first pushing its output to the
second), rebuilt with nothing but trio TCP sockets on 127.0.0.1 and length-prefixed raw
tensors: each server also sends the client its output and a 300-byte stand-in for a
commitment, as Plexus' servers do, and the client reads them all; no encryption, checks,
signatures or bookkeeping. Every process uses a torch thread per core (the `shared`
layout). Each round runs transformers' `generate()` (its own process, the faster of 1 and
2 threads), then a chain generation, then a Plexus one (bootstrap peer, two `plexus
serve`, the client library with verification on); every generation must give
`generate()`'s tokens. What the chain reaches and Plexus does not is Plexus' own per-step
work; the chain's servers also print their median decode-step compute.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as plexus serve sets it

import torch
import trio

sys.path.insert(0, str(Path(__file__).parent))
from distributed_throughput import Local, bench_prompt, machine, model_folder, ready_client

from plexus.local_swarm import LocalSwarm
from plexus.models.loading import load_head, load_span
from plexus.models.session import SpanSession

HEADER = struct.Struct("<BIIII")  # kind, payload bytes, tensor shape
NEW, HIDDEN, OUTPUT, COMMITMENT, STOP = range(5)
COMMITMENT_BYTES = 300


class Framed:
    """Length-prefixed frames over a trio stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream, self.buffer = stream, bytearray()

    async def send(self, kind: int, tensor: torch.Tensor | None = None, raw: bytes = b"") -> None:
        shape = tuple(tensor.shape) if tensor is not None else (0, 0, 0)
        payload = tensor.numpy().tobytes() if tensor is not None else raw
        await self.stream.send_all(HEADER.pack(kind, len(payload), *shape) + payload)

    async def receive(self) -> tuple[int, torch.Tensor | None]:
        while True:
            if len(self.buffer) >= HEADER.size:
                kind, size, *shape = HEADER.unpack_from(self.buffer)
                end = HEADER.size + size
                if len(self.buffer) >= end:
                    payload = bytearray(self.buffer[HEADER.size : end])
                    del self.buffer[:end]
                    if kind != HIDDEN and kind != OUTPUT:
                        return kind, None
                    return kind, torch.frombuffer(payload, dtype=torch.float32).view(shape)
            data = await self.stream.receive_some(1 << 16)
            if not data:
                raise EOFError("the other end closed")
            self.buffer += data


async def _dial(port: int) -> Framed:
    for _ in range(1200):
        try:
            return Framed(await trio.open_tcp_stream("127.0.0.1", port))
        except OSError:
            await trio.sleep(0.05)
    raise OSError(f"nothing listens on 127.0.0.1:{port}")


def _server(folder: str, start: int, end: int, ports: tuple[int, int, int | None]) -> None:
    """Listen on ports[0]; push outputs to ports[1]; reply to the client on ports[2]
    (None: the next port is the client's)."""
    span = load_span(folder, start, end, dtype="fp32", progress=False)

    async def serve() -> None:
        listener = (await trio.open_tcp_listeners(ports[0], host="127.0.0.1"))[0]
        upstream = Framed(await listener.accept())
        downstream = await _dial(ports[1])
        client = await _dial(ports[2]) if ports[2] is not None else downstream
        session, computes = SpanSession(span), []
        with torch.inference_mode():
            while True:
                kind, hidden = await upstream.receive()
                if kind == STOP:
                    median_ms = 1000 * statistics.median(computes)
                    print(f"chain server {start}-{end}: decode compute median {median_ms:.2f} ms")
                    await downstream.send(STOP)
                    return
                if kind == NEW:
                    session = SpanSession(span)
                    await downstream.send(NEW)
                    continue
                assert hidden is not None
                started = time.perf_counter()
                out = session.step(hidden, None)
                if hidden.shape[1] == 1:
                    computes.append(time.perf_counter() - started)
                await downstream.send(OUTPUT, out)
                if client is not downstream:
                    await client.send(OUTPUT, out)
                await client.send(COMMITMENT, raw=bytes(COMMITMENT_BYTES))

    trio.run(serve)


class Chain:
    def __init__(self, folder: Path, layers: int, base_port: int) -> None:
        self.folder, self.layers, self.port = folder, layers, base_port
        self.head = load_head(folder, dtype="fp32", progress=False)

    async def open(self) -> None:
        first, second, back, side = (self.port + k for k in range(4))
        self._back = (await trio.open_tcp_listeners(back, host="127.0.0.1"))[0]
        self._side = (await trio.open_tcp_listeners(side, host="127.0.0.1"))[0]
        context, half = multiprocessing.get_context("spawn"), self.layers // 2
        for start, end, ports in (
            (half, self.layers - 1, (second, back, None)),
            (0, half - 1, (first, second, side)),
        ):
            args = (str(self.folder), start, end, ports)
            context.Process(target=_server, args=args, daemon=True).start()
        self.to_first = await _dial(first)
        self.from_last = Framed(await self._back.accept())
        self.from_first = Framed(await self._side.accept())

    async def generate(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        await self.to_first.send(NEW)
        assert (await self.from_last.receive())[0] == NEW
        ids, out = torch.tensor([prompt]), []
        started = time.perf_counter()
        with torch.inference_mode():
            for _ in range(new_tokens):
                await self.to_first.send(HIDDEN, self.head.embed(ids))
                for expected in (OUTPUT, COMMITMENT):  # the first server's reply
                    assert (await self.from_first.receive())[0] == expected
                kind, hidden = await self.from_last.receive()
                assert kind == OUTPUT and hidden is not None
                out.append(int(self.head.logits(hidden[:, -1]).argmax(-1)))
                assert (await self.from_last.receive())[0] == COMMITMENT
                ids = torch.tensor([[out[-1]]])
        return new_tokens / (time.perf_counter() - started), out

    async def close(self) -> None:
        await self.to_first.send(STOP)
        with trio.move_on_after(10):
            await self.from_last.receive()


async def rounds(
    args: argparse.Namespace, folder: Path, local: Local, boot: str
) -> dict[str, list[float]]:
    prompt = bench_prompt(args.prompt_tokens)
    chain = Chain(folder, local.num_layers, args.base_port)
    await chain.open()
    speeds: dict[str, list[float]] = {"local": [], "chain": [], "plexus": []}
    data_dir = args.dir / "client"
    async with ready_client(folder, boot, data_dir, prompt) as client:
        for _ in range(args.rounds):
            speeds["local"].append(await local.tokens_per_s())
            speed, tokens = await chain.generate(prompt, args.new_tokens)
            speeds["chain"].append(speed)
            result = await client.generate_ids(prompt, max_new_tokens=args.new_tokens, eos=False)
            speeds["plexus"].append(result.tokens_per_s)
            if tokens != local.tokens or result.token_ids != local.tokens:
                raise SystemExit("a generation's tokens differ from generate()'s")
    await chain.close()
    return speeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="30M", choices=["30M", "300M"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--base-port", type=int, default=47200, help="4 ports from here")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "plexus-bench")
    args = parser.parse_args()
    folder = model_folder(args.dir, args.size)
    local = Local(folder, bench_prompt(args.prompt_tokens), args.new_tokens)
    torch.set_num_threads(os.cpu_count() or 1)
    n = local.num_layers
    with LocalSwarm(args.dir / f"swarm-chain-{os.getpid()}") as swarm:
        swarm.start_bootstrap()
        for span in (f"0-{n // 2 - 1}", f"{n // 2}-{n - 1}"):
            swarm.start_server(str(folder), span, "--no-rebalance", "--dtype", "fp32",
                               "--threads", str(os.cpu_count() or 1))  # fmt: skip
        speeds = trio.run(rounds, args, folder, local, swarm.initial_peers[0])
    local.close()
    print({k: [round(x, 1) for x in v] for k, v in speeds.items()}, file=sys.stderr)
    local_median = statistics.median(speeds["local"])
    for mode in ("chain", "plexus"):
        pairs = zip(speeds[mode], speeds["local"], strict=True)
        paired = statistics.median(p / lo for p, lo in pairs)
        best = max(speeds[mode]) / max(speeds["local"])
        print(
            f"llama-{args.size} on {machine()}, shared: {mode} median "
            f"{statistics.median(speeds[mode]):.1f} tok/s (local {local_median:.1f}), "
            f"ratio best {best:.3f}, paired median {paired:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
