"""The best a 2-process pipeline can do on this machine, with no Plexus at all.

    python benchmarks/pipeline_bound.py [--sizes 30M 300M] [--rounds 6] [--layouts ...]

What the client/server comparison (`distributed_throughput.py`) would reach if messaging,
verification and accounting cost nothing: process 1 holds the embeddings, the first half
of the blocks and the LM head, process 2 the second half; hidden states go through a
multiprocessing pipe as raw bytes; greedy decoding, KV caches in plexus' `SpanSession`.
Rounds alternate with transformers' generate() in a process of its own (the faster of 1
and 2 torch threads, every core), on the weights `distributed_throughput.py` writes (same
`--dir`), and every pipeline generation must give generate()'s tokens.
Layouts as in `distributed_throughput.py`: `pinned` (a core each, 1 thread per core) and
`shared` (no pinning, a thread per core in each process).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import trio

sys.path.insert(0, str(Path(__file__).parent))
from distributed_throughput import LAYOUTS, SHAPES, Local, bench_prompt, machine, model_folder

from plexus.models.loading import load_head, load_span
from plexus.models.session import SpanSession


def _pin(cpus: set[int] | None, threads: int) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)


def _tensor(shape: tuple[int, ...], data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.float32).view(shape)


def _second_half(
    conn: Connection, folder: str, start: int, end: int, cpus: set[int] | None, threads: int
) -> None:
    _pin(cpus, threads)
    span = load_span(folder, start, end, dtype="fp32", progress=False)
    conn.send("ready")
    session = SpanSession(span)
    with torch.inference_mode():
        while (message := conn.recv()) is not None:
            if message == "new":
                session = SpanSession(span)
                continue
            out = session.step(_tensor(*message), None)
            conn.send((tuple(out.shape), out.numpy().tobytes()))


class Pipeline:
    """Embeddings + first half + head here, the second half in a spawned process."""

    def __init__(self, folder: Path, layers: int, layout: str) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        pinned = layout == "pinned"
        threads = 1 if pinned else len(cpus)
        mine, theirs = ({cpus[0]}, {cpus[-1]}) if pinned else (None, None)
        self._cpus = cpus
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        half = layers // 2
        self._process = context.Process(
            target=_second_half,
            args=(child, str(folder), half, layers - 1, theirs, threads),
            daemon=True,
        )
        self._process.start()
        _pin(mine, threads)
        self.span = load_span(folder, 0, half - 1, dtype="fp32", progress=False)
        self.head = load_head(folder, dtype="fp32", progress=False)
        self._conn.recv()

    @torch.inference_mode()
    def tokens_per_s(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        session = SpanSession(self.span)
        self._conn.send("new")
        ids = torch.tensor([prompt])
        out: list[int] = []
        started = time.perf_counter()
        for _ in range(new_tokens):
            hidden = session.step(self.head.embed(ids), None)
            self._conn.send((tuple(hidden.shape), hidden.numpy().tobytes()))
            hidden = _tensor(*self._conn.recv())
            out.append(int(self.head.logits(hidden[:, -1]).argmax(-1)))
            ids = torch.tensor([[out[-1]]])
        return new_tokens / (time.perf_counter() - started), out

    def close(self) -> None:
        self._conn.send(None)
        self._process.join(30)
        os.sched_setaffinity(0, self._cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["30M"], choices=list(SHAPES))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "plexus-bench")
    args = parser.parse_args()
    for size in args.sizes:
        folder = model_folder(args.dir, size)
        prompt = bench_prompt(args.prompt_tokens)
        local = Local(folder, prompt, args.new_tokens)  # before any pinning: every core
        for layout in args.layouts:
            pipeline = Pipeline(folder, local.num_layers, layout)
            speeds: dict[str, list[float]] = {"local": [], "pipeline": []}
            for _ in range(args.rounds):
                speeds["local"].append(trio.run(local.tokens_per_s))
                speed, tokens = pipeline.tokens_per_s(prompt, args.new_tokens)
                if tokens != local.tokens:
                    raise SystemExit("the pipeline's tokens differ from generate()'s")
                speeds["pipeline"].append(speed)
            pipeline.close()
            paired = statistics.median(
                p / lo for p, lo in zip(speeds["pipeline"], speeds["local"], strict=True)
            )
            print({k: [round(x, 1) for x in v] for k, v in speeds.items()}, file=sys.stderr)
            print(
                f"llama-{size} on {machine()}, {layout}: local {max(speeds['local']):.1f} "
                f"tok/s, pipeline {max(speeds['pipeline']):.1f} tok/s, ratio "
                f"{max(speeds['pipeline']) / max(speeds['local']):.3f} (paired median "
                f"{paired:.3f}); same tokens",
                flush=True,
            )
        local.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
