"""A scripted DHT peer for multi-process tests (not a user command).

    python -m plexus.p2p._testpeer --initial-peers ADDR --model M --period 3 --ttl 6

Announces a record for blocks --start..--end every --period seconds, prints one JSON line
{"event": "ready", ...} after its first announce, then answers stdin commands with one JSON
line each: `find` -> {"event": "found", "peers": [...], "seconds": S, "error": null};
`quit` or EOF -> exits (withdrawing its record).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

import trio

from plexus.errors import NetworkError
from plexus.identity import Identity
from plexus.p2p.dht import DHTConfig, DHTNode, configure_libp2p_logging
from plexus.p2p.records import ServerRecord, make_record


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
    sys.stdout.flush()


async def read_lines(stream: trio.abc.ReceiveStream) -> Any:
    buffer = b""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode().strip()


async def main(args: argparse.Namespace) -> None:
    identity = Identity.generate(os.urandom(32))
    config = DHTConfig(maintenance_period=max(1.0, args.period))

    def make() -> ServerRecord:
        return make_record(
            identity,
            model_id=args.model,
            start=args.start,
            end=args.end,
            throughput=10.0,
            free_cache_tokens=1024,
            dtype="float32",
            data_addr="127.0.0.1:9",
            ttl=args.ttl,
        )

    async with DHTNode.open(identity, "127.0.0.1", 0, args.initial_peers, config=config) as node:
        first = make()
        done = await node.announce(first)
        async with trio.open_nursery() as nursery:

            async def keep_announcing() -> None:
                await trio.sleep(args.period)
                await node.announce_forever(make, args.period)

            nursery.start_soon(keep_announcing)
            emit(
                {
                    "event": "ready",
                    "peer_id": node.peer_id,
                    "multiaddrs": node.multiaddrs,
                    "stored": done.stored,
                    "providing": done.providing,
                    "expires_at": first.expires_at,
                }
            )
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            async for line in read_lines(stdin):
                if line == "find":
                    started = time.monotonic()
                    try:
                        peers = [r.peer_id for r in await node.find_servers(args.model)]
                        error = None
                    except NetworkError as exc:
                        peers, error = [], str(exc)
                    seconds = round(time.monotonic() - started, 3)
                    emit({"event": "found", "peers": peers, "seconds": seconds, "error": error})
                elif line == "quit":
                    break
            nursery.cancel_scope.cancel()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m plexus.p2p._testpeer")
    parser.add_argument("--initial-peers", nargs="*", default=[])
    parser.add_argument("--model", default="test-model")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--end", type=int, default=0)
    parser.add_argument("--period", type=float, default=3.0)
    parser.add_argument("--ttl", type=float, default=6.0)
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(
        level=arguments.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    configure_libp2p_logging(arguments.log_level)
    trio.run(main, arguments)
