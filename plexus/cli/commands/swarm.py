"""`plexus swarm`: the live servers of a model and the coverage of every block."""

from __future__ import annotations

import argparse
import time

from plexus.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "swarm",
        help="list a model's live servers and which blocks are covered",
        description="Look up a model's servers in the DHT and print one line per live server "
        "(peer id, span, throughput, sessions, free cache, version) and the coverage of every "
        "block, calling out blocks that nobody serves.",
    )
    parser.add_argument(
        "--model",
        default="plexus-tiny",
        help="hub id, local folder or plexus-tiny (default plexus-tiny)",
    )
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds to wait for the lookup (default 20)"
    )
    options.add_common(parser, network=True, reporting=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio

    from plexus.p2p.dht import configure_libp2p_logging

    configure_libp2p_logging(args.log_level)
    return trio.run(_run, args)


async def _run(args: argparse.Namespace) -> int:
    import trio

    from plexus.errors import NetworkError
    from plexus.identity import Identity
    from plexus.models import open_model
    from plexus.p2p.dht import DHTNode

    data_dir = options.data_dir(args)
    files = open_model(args.model, data_dir)
    model_id = files.model_id
    num_blocks = files.config.num_hidden_layers
    peers = options.initial_peers(args)
    if not peers:
        from plexus.errors import ConfigError

        raise ConfigError("no peers to ask: pass --initial-peers or set PLEXUS_INITIAL_PEERS")
    identity = Identity.generate()  # a throwaway identity: looking is anonymous
    async with DHTNode.open(identity, "127.0.0.1", 0, peers) as node:
        with trio.move_on_after(args.timeout) as scope:
            records = await node.find_servers(model_id)
        if scope.cancelled_caught:
            raise NetworkError(f"no answer from the swarm within {args.timeout} s")
    now = time.time()
    servers = sorted((r for r in records if r.is_live(now)), key=lambda r: (r.start, r.peer_id))
    coverage = [0] * num_blocks
    throughput = [0.0] * num_blocks
    for r in servers:
        for b in range(r.start, min(r.end, num_blocks - 1) + 1):
            coverage[b] += 1
            throughput[b] += r.throughput
    missing = [b for b, n in enumerate(coverage) if n == 0]
    report = {
        "model": args.model,
        "model_id": model_id,
        "num_blocks": num_blocks,
        "servers": [
            {
                "peer_id": r.peer_id,
                "start": r.start,
                "end": r.end,
                "throughput": r.throughput,
                "sessions": r.extra.get("sessions"),
                "free_cache_tokens": r.free_cache_tokens,
                "dtype": r.dtype,
                "version": r.version,
                "data_addr": r.data_addr,
                "expires_in": round(r.expires_at - now, 1),
            }
            for r in servers
        ],
        "coverage": coverage,
        "block_throughput": [round(t, 1) for t in throughput],
        "missing_blocks": missing,
        "fully_covered": not missing,
    }
    if args.json:
        options.emit_json(report)
        return 0
    print(
        f"model {args.model} ({model_id[:19]}...), {num_blocks} blocks, "
        f"{len(servers)} live server(s)"
    )
    print(
        f"{'peer id':<54} {'blocks':>7} {'tok/s/blk':>10} {'sessions':>8} "
        f"{'free cache':>10} {'version':>8}"
    )
    for s in report["servers"]:
        print(
            f"{s['peer_id']:<54} {s['start']:>3}-{s['end']:<3} {s['throughput']:>10.1f} "
            f"{s['sessions'] if s['sessions'] is not None else '?':>8} "
            f"{s['free_cache_tokens']:>10} {s['version']:>8}"
        )
    print("coverage: " + " ".join(f"{b}:{n}" for b, n in enumerate(coverage)))
    if missing:
        from plexus.client.planner import format_blocks

        print(f"NOT SERVED: blocks {format_blocks(missing)}")
    else:
        print("every block is served")
    return 0
