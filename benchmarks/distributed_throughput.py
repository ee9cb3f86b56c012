"""Tokens/s of a session through 2 server processes vs single-process generate().

    python benchmarks/distributed_throughput.py [--sizes 30M 300M] [--new-tokens 64]
        [--rounds 4] [--layouts pinned shared] [--threads N] [--json]

For each Llama shape: writes random weights (cached under --dir), starts a bootstrap
peer and two `plexus serve` processes (half the blocks each) on 127.0.0.1, then
alternates, `--rounds` times: transformers' greedy generate() in a process of its own
(with 1 and with 2 torch threads; the faster counts), and the same generation through the
two servers with the client library, forwarding on (the default) and off, timed from the
prefill to the last token as `Generation.tokens_per_s` reports it (opening and closing the
session are not counted, as loading is not for generate()). Alternating keeps the
comparison fair on a machine whose speed drifts between minutes.

Two layouts of the swarm on this one machine, each measured with its own local rounds:
- `pinned`: each server on its own half of the cores (`plexus serve --cpus`), as many
  torch threads as it has cores; the client shares the first server's.
- `shared`: nothing pinned; each server and the client use every core's worth of torch
  threads. Only one of them computes at a time, so each gets what generate() gets.
Which suits a machine depends on its cores (on one 2-vCPU VM `pinned` was faster, on
another a second thread sped generate() up by a third and `shared` was; docs/performance.md).
Prints tokens/s (best and median of the rounds), the ratio of the bests and the median of
the rounds' ratios (each swarm round over the local round just before it), whether the
client kept its LM head prefetch (`plexus.client.idle_work`), and checks that every
distributed generation gave transformers' tokens.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import trio
from transformers import AutoModelForCausalLM, LlamaConfig

from plexus.client import AsyncClient
from plexus.local_swarm import LocalSwarm

SHAPES = {
    "30M": dict(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=8000,
    ),
    "300M": dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
}


def model_folder(root: Path, size: str) -> Path:
    folder = root / f"llama-{size}"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        config = LlamaConfig(
            **SHAPES[size], max_position_embeddings=1024, pad_token_id=0, tie_word_embeddings=False
        )
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(folder)
    return folder


LAYOUTS = ("pinned", "shared")
"""How a swarm shares this machine's cores (see the module's docstring)."""


def bench_prompt(tokens: int) -> list[int]:
    """The prompt every benchmark run uses: `tokens` ids from a fixed seed."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(1, 1000, (tokens,), generator=generator).tolist()


def machine() -> str:
    """CPU model, cores and kernel: figures from different machines are not comparable
    (the same code gave 0.8 on one build machine and 0.6 on the next)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            ]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


class Local:
    """transformers' generate() in a process of its own (spawned), so that this process'
    event loop, whose client holds the swarm's connections, keeps running meanwhile: a
    loop stalled for the seconds generate() takes would leave its backlog (timers,
    messages, background writes) to the swarm run that follows."""

    def __init__(self, folder: Path, prompt: list[int], new_tokens: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_local_worker, args=(child, str(folder), prompt, new_tokens), daemon=True
        )
        self._process.start()
        self.num_layers, self.params = self._conn.recv()  # loaded and warmed up
        self.tokens: list[int] = []

    async def tokens_per_s(self) -> float:
        """The faster of 1 and 2 torch threads (whichever suits this machine and size)."""
        self._conn.send("run")
        speed, self.tokens = await trio.to_thread.run_sync(self._conn.recv)
        return speed

    def close(self) -> None:
        self._conn.send("stop")
        self._process.join(30)


def _local_worker(conn: Connection, folder: str, prompt: list[int], new_tokens: int) -> None:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0)

    def generate(n: int) -> tuple[float, list[int]]:
        started = time.perf_counter()
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kwargs)
        return n / (time.perf_counter() - started), out[0, ids.shape[1] :].tolist()

    generate(4)  # warm-up
    conn.send((model.config.num_hidden_layers, sum(p.numel() for p in model.parameters())))
    while conn.recv() == "run":
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(generate(new_tokens))
        conn.send(max(runs))


@asynccontextmanager
async def ready_client(
    folder: Path, boot: str, data_dir: Path, prompt: list[int]
) -> AsyncIterator[AsyncClient]:
    """A client of the benchmark's swarm once it sees both servers, warmed up by a short
    generation (which opens the route and dials the servers)."""
    async with AsyncClient.connect(str(folder), initial_peers=[boot], data_dir=data_dir) as client:
        with trio.fail_after(60):
            while len(await client.swarm.node.find_servers(client.swarm.model_id)) < 2:
                await trio.sleep(0.5)
        await client.swarm.refresh(force=True)
        await client.generate_ids(prompt, max_new_tokens=4, eos=False)  # warm-up
        yield client


async def swarm_runs(
    boot: str,
    folder: Path,
    data_dir: Path,
    prompt: list[int],
    new_tokens: int,
    local: Local,
    rounds: int,
    client_cpus: set[int],
) -> tuple[dict[str, list[float]], bool | str | None]:
    speeds: dict[str, list[float]] = {"local": [], "forwarding": [], "relay": []}
    prefetch: bool | str | None = None  # the trial's decision; "n/a" without a trial
    async with ready_client(folder, boot, data_dir, prompt) as client:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)  # generate() keeps every core in its process
        for _ in range(rounds):
            speeds["local"].append(await local.tokens_per_s())
            for mode in ("forwarding", "relay"):
                client.forwarding = mode == "forwarding"
                result = await client.generate_ids(prompt, max_new_tokens=new_tokens, eos=False)
                # The session's own speed: prefill and decoding, as for generate() (opening
                # the route and closing it with its receipts are not counted).
                speeds[mode].append(result.tokens_per_s)
                if result.token_ids != local.tokens:
                    raise SystemExit(f"{mode}: tokens differ from transformers' generate()")
        prefetch = client.prefetch_trial.decision if client.head.prefetch_helps else "n/a"
    return speeds, prefetch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=list(LAYOUTS),
        choices=list(LAYOUTS),
        help="how the swarm shares this machine's cores (see above; default both)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per server (default: see above)"
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "plexus-bench")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for size in args.sizes:
        folder = model_folder(args.dir, size)
        prompt = bench_prompt(args.prompt_tokens)
        local = Local(folder, prompt, args.new_tokens)
        for layout in args.layouts:
            report = run_layout(args, size, folder, prompt, local, layout)
            if args.json:
                print(json.dumps(report), flush=True)
            else:
                print(
                    "{model} on {machine}, {layout}: {parameters_m}M params, local "
                    "{local_tokens_per_s} tok/s, 2 servers {forwarding_tokens_per_s} tok/s "
                    "forwarding ({relay_tokens_per_s} relaying), ratio {ratio} (relay "
                    "{ratio_relay}; paired median {ratio_paired_median}); head prefetch "
                    "{head_prefetch}; same tokens".format(**report),
                    flush=True,
                )
        local.close()
    return 0


def run_layout(
    args: argparse.Namespace, size: str, folder: Path, prompt: list[int], local: Local, layout: str
) -> dict[str, object]:
    """Start a swarm laid out as `layout`, run the rounds; the report of that layout."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = layout == "pinned"
    halves = [cpus[: max(1, len(cpus) // 2)], cpus[len(cpus) // 2 :] or cpus]
    threads = args.threads or (len(halves[0]) if pinned else len(cpus))
    # The client's head: one thread beside a pinned server, else every core (as generate()).
    torch.set_num_threads(1 if pinned else len(cpus))
    n, params = local.num_layers, local.params
    with LocalSwarm(args.dir / f"swarm-{size}-{layout}-{os.getpid()}") as swarm:
        swarm.start_bootstrap()
        for half, span in zip(halves, (f"0-{n // 2 - 1}", f"{n // 2}-{n - 1}"), strict=True):
            pin = ["--cpus", ",".join(map(str, half))] if pinned else []
            swarm.start_server(
                str(folder), span, "--no-rebalance", "--dtype", "fp32",
                "--threads", str(threads), *pin,
            )  # fmt: skip
        try:
            speeds, prefetch = trio.run(
                swarm_runs,
                swarm.initial_peers[0],
                folder,
                args.dir / "client",
                prompt,
                args.new_tokens,
                local,
                args.rounds,
                {halves[0][0]} if pinned else set(),
            )
        finally:
            os.sched_setaffinity(0, cpus)  # the next layout starts from every core
    best = {mode: max(v) for mode, v in speeds.items()}
    print({m: [round(x, 1) for x in v] for m, v in speeds.items()}, file=sys.stderr)  # rounds
    return {
        "model": f"llama-{size}",
        "machine": machine(),
        "layout": layout,
        "parameters_m": round(params / 1e6, 1),
        "rounds": args.rounds,
        "server_threads": threads,
        "pinned": pinned,
        **{f"{mode}_tokens_per_s": round(best[mode], 2) for mode in best},
        **{f"{mode}_median": round(statistics.median(v), 2) for mode, v in speeds.items()},
        "ratio": round(best["forwarding"] / best["local"], 3),
        "ratio_relay": round(best["relay"] / best["local"], 3),
        "ratio_of_medians": round(
            statistics.median(speeds["forwarding"]) / statistics.median(speeds["local"]), 3
        ),
        # Each round's swarm speed over the local speed measured just before it.
        "ratio_paired_median": round(
            statistics.median(
                f / lo for f, lo in zip(speeds["forwarding"], speeds["local"], strict=True)
            ),
            3,
        ),
        # "n/a": a head too big to stay cached is never prefetched (ClientHead.prefetch_helps)
        "head_prefetch": {True: "kept", False: "dropped", None: "undecided"}.get(prefetch, "n/a"),
        "same_tokens": True,
    }


if __name__ == "__main__":
    sys.exit(main())
