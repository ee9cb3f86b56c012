"""`plexus serve`: contribute this machine's GPU (or CPU) to the swarm."""

from __future__ import annotations

import argparse
from pathlib import Path

from plexus.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve a span of a model's blocks to the swarm",
        description="Load blocks of a model and serve them to the swarm's clients. Prints this "
        "peer's multiaddrs on stdout once it is serving and announced; logs go to stderr. "
        "SIGINT/SIGTERM withdraw the announcement and exit 0.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="hub id, local Hugging Face folder, or plexus-tiny (the embedded test model)",
    )
    parser.add_argument(
        "--shards",
        default=None,
        metavar="A-B",
        help="serve blocks A through B inclusive (0-20 is 21 blocks); 'auto' or absent: serve "
        "where the swarm is weakest, as many blocks as fit in memory",
    )
    parser.add_argument(
        "--num-blocks",
        type=int,
        default=None,
        help="with automatic spans, serve at most this many blocks",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; use 0.0.0.0 with "
        "--announce-host to serve other machines)",
    )
    parser.add_argument(
        "--announce-host", default=None, help="address other peers should use to reach this one"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port of the DHT (libp2p) listener (default: any free port)",
    )
    parser.add_argument(
        "--data-port",
        type=int,
        default=0,
        help="TCP port of the tensor data plane (default: any free port)",
    )
    parser.add_argument(
        "--identity",
        type=Path,
        default=None,
        help="this peer's key file (default DATA_DIR/identity.key, created on first run)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda or cuda:N (default: cuda when present, else cpu)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="weights and compute dtype (default: bf16 on CUDA, fp32 on CPU)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads torch may use for this server's compute (default: torch's, one "
        "per core); with several servers on one machine, give each a share of the cores",
    )
    parser.add_argument(
        "--cpus",
        default=None,
        metavar="LIST",
        help="run only on these CPU cores, e.g. 1 or 0-3,6 (Linux); --threads then "
        "defaults to their number. Gives each server on a shared machine its own cores",
    )
    parser.add_argument(
        "--max-sessions", type=int, default=64, help="concurrent inference sessions (default 64)"
    )
    parser.add_argument(
        "--cache-tokens",
        type=int,
        default=16384,
        help="KV-cache budget in tokens over all sessions (default 16384)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="drop a session idle this many seconds (default 300)",
    )
    parser.add_argument(
        "--announce-period",
        type=float,
        default=30.0,
        help="seconds between announcements; records expire after twice this",
    )
    parser.add_argument(
        "--rebalance-period",
        type=float,
        default=300.0,
        help="seconds between checks for a more useful span (default 300)",
    )
    parser.add_argument("--no-rebalance", action="store_true", help="never move to another span")
    parser.add_argument(
        "--refresh-throughput",
        action="store_true",
        help="measure throughput again instead of using the cached figure",
    )
    parser.add_argument(
        "--ledger-url",
        default=None,
        metavar="URL",
        help="ledger database for this server's receipts (SQLAlchemy URL, e.g. "
        "postgresql://user@host/db; default: sqlite at DATA_DIR/ledger.sqlite)",
    )
    parser.add_argument(
        "--inject-fault",
        default=None,
        metavar="KIND[:RATE]",
        help="TESTING ONLY: misbehave on a fraction RATE (default 1) of requests; KIND is "
        "noise, skip, random, crash or slow (docs/verification.md, 'Fault injection')",
    )
    options.add_emulate_latency(parser)
    options.add_common(parser, network=True, reporting=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio

    from plexus.errors import ConfigError
    from plexus.p2p.dht import configure_libp2p_logging
    from plexus.server.runner import ServeOptions, parse_shards, print_ready, serve

    if args.cpus is not None:  # first: threads started from here on inherit it
        from plexus.cpu_affinity import parse_cpu_list, pin_to

        cpus = parse_cpu_list(args.cpus)
        pin_to(cpus)
        if args.threads is None:
            args.threads = len(cpus)
    configure_libp2p_logging(args.log_level)
    data_dir = options.data_dir(args)
    for name in ("max_sessions", "cache_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.announce_period <= 0:
        raise ConfigError("--announce-period must be positive")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    opts = ServeOptions(
        model=args.model,
        data_dir=data_dir,
        identity_file=args.identity or data_dir / "identity.key",
        shards=parse_shards(args.shards),
        num_blocks=args.num_blocks,
        host=args.host,
        announce_host=args.announce_host,
        port=args.port,
        data_port=args.data_port,
        initial_peers=options.initial_peers(args),
        device=args.device,
        dtype=args.dtype,
        max_sessions=args.max_sessions,
        cache_tokens=args.cache_tokens,
        idle_timeout=args.idle_timeout,
        announce_period=args.announce_period,
        rebalance_period=args.rebalance_period,
        rebalance=not args.no_rebalance,
        json=args.json,
        refresh_throughput=args.refresh_throughput,
        emulate_latency=options.emulated_latency(args),
        inject_fault=args.inject_fault,
        ledger_url=args.ledger_url,
    )
    if args.inject_fault:
        from plexus.verification.faults import Fault

        Fault.parse(args.inject_fault)  # a bad value is a usage error before any loading
    return trio.run(serve, opts, lambda info: print_ready(info, args.json))
