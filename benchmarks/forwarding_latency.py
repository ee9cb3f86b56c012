"""Per-token decode latency with server-to-server forwarding vs client relay, on an
emulated wide-area network.

    python benchmarks/forwarding_latency.py [--delay-ms 20] [--servers 3] [--tokens 48]

Starts a bootstrap peer and N `plexus serve` processes of plexus-tiny on 127.0.0.1 (the
blocks split N ways), every one with `--emulate-latency DELAY` (each data-plane message
it sends is held DELAY ms), and a client with the same emulated delay. Then generates
greedily with forwarding on and off, alternating, and prints the median time per decode
step of each and their ratio. Network legs alone give (N + 1) / 2N (0.67 for 3 servers):
forwarding pays one leg per server plus one back, relaying two legs per server.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from plexus.client import AsyncClient
from plexus.local_swarm import LocalSwarm
from plexus.models import TINY_MODEL_NAME, open_model


async def decode_times(
    boot: str, data_dir: Path, forwarding: bool, tokens: int, delay: float, servers: int
) -> tuple[list[float], list[int], int]:
    """Seconds per decode step (prefill excluded), token ids, and legs forwarded."""
    async with AsyncClient.connect(
        TINY_MODEL_NAME,
        initial_peers=[boot],
        data_dir=data_dir,
        forwarding=forwarding,
        emulate_latency=(delay, 0.0),
    ) as client:
        with trio.fail_after(60):
            while len(await client.swarm.node.find_servers(client.swarm.model_id)) < servers:
                await trio.sleep(0.5)
        await client.swarm.refresh(force=True)
        session = await client.open_session(64 + tokens)
        stamps: list[float] = []
        result = await client.generate_ids(
            list(range(3, 19)),
            max_new_tokens=tokens,
            eos=False,
            session=session,
            on_token=lambda _: stamps.append(time.perf_counter()),
        )
        await session.close()
        steps = [b - a for a, b in itertools.pairwise(stamps)]
        return steps, result.token_ids, session.forwarded_legs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay per peer")
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per generation")
    parser.add_argument("--rounds", type=int, default=3, help="generations per mode")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "plexus-fwd")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    data_dir = args.dir / "client"
    files = open_model(TINY_MODEL_NAME, data_dir)
    n = files.config.num_hidden_layers
    bounds = [round(i * n / args.servers) for i in range(args.servers + 1)]
    spans = [f"{a}-{b - 1}" for a, b in itertools.pairwise(bounds)]
    times: dict[bool, list[float]] = {True: [], False: []}
    tokens: dict[bool, list[int]] = {}
    legs: dict[bool, int] = {True: 0, False: 0}
    with LocalSwarm(args.dir / f"swarm-{time.strftime('%H%M%S')}") as swarm:
        swarm.start_bootstrap()
        for span in spans:
            swarm.start_server(
                TINY_MODEL_NAME,
                span,
                "--no-rebalance",
                "--emulate-latency",
                f"{args.delay_ms}ms",
            )
        for _ in range(args.rounds):
            for forwarding in (True, False):
                steps, ids, n_legs = trio.run(
                    decode_times,
                    swarm.initial_peers[0],
                    data_dir,
                    forwarding,
                    args.tokens,
                    delay,
                    len(spans),
                )
                times[forwarding] += steps
                tokens[forwarding] = ids
                legs[forwarding] += n_legs
    fwd, relay = statistics.median(times[True]), statistics.median(times[False])
    report = {
        "servers": len(spans),
        "one_way_delay_ms": args.delay_ms,
        "decode_steps_per_mode": len(times[True]),
        "forwarding_ms_per_token": round(fwd * 1000, 2),
        "relay_ms_per_token": round(relay * 1000, 2),
        "ratio": round(fwd / relay, 3),
        "network_legs_ratio": round((len(spans) + 1) / (2 * len(spans)), 3),
        "forwarding_p90_ms": round(sorted(times[True])[int(0.9 * len(times[True]))] * 1000, 2),
        "relay_p90_ms": round(sorted(times[False])[int(0.9 * len(times[False]))] * 1000, 2),
        "legs_forwarded": legs[True],
        "legs_forwarded_in_relay_mode": legs[False],
        "same_tokens": tokens[True] == tokens[False],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['servers']} servers, {args.delay_ms:g} ms one way: forwarding "
            f"{report['forwarding_ms_per_token']} ms/token, relay {report['relay_ms_per_token']} "
            f"ms/token, ratio {report['ratio']} (network legs alone: "
            f"{report['network_legs_ratio']}); same tokens: {report['same_tokens']}"
        )
    return 0 if report["same_tokens"] else 1


if __name__ == "__main__":
    sys.exit(main())
