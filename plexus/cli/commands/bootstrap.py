"""`plexus bootstrap`: run a DHT-only peer that others join through.

Prints its full multiaddrs (`/ip4/H/tcp/P/p2p/<peer-id>`, one per line, or one JSON object
with --json) on stdout once it listens; logs go to stderr; SIGINT/SIGTERM close the host
cleanly and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

import trio

from plexus.cli import options
from plexus.identity import IDENTITY_FILE_NAME, Identity
from plexus.p2p.dht import DHTNode, configure_libp2p_logging

log = logging.getLogger(__name__)

DEFAULT_PORT = 31337


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bootstrap",
        help="run a DHT-only peer that servers and clients join through",
        description="Run a DHT-only Plexus peer. It stores and serves server records but "
        "runs no model. Prints its multiaddrs on stdout once listening; give them to "
        "others as --initial-peers or in a peers.txt file.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for a public peer, "
        "with --announce-host)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument(
        "--announce-host",
        default=None,
        help="address to advertise instead of --host (the public IP or DNS name)",
    )
    parser.add_argument(
        "--identity",
        type=Path,
        default=None,
        help="key file (created if missing; default DATA_DIR/identity.key); keep it to "
        "keep the peer id that peers.txt lists",
    )
    options.add_common(parser, network=True, reporting=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_libp2p_logging(args.log_level)
    identity = Identity.load_or_create(args.identity or options.data_dir(args) / IDENTITY_FILE_NAME)
    peers = options.initial_peers(args)
    return trio.run(serve, identity, args, peers)


async def serve(identity: Identity, args: argparse.Namespace, peers: list[str]) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with DHTNode.open(
            identity, args.host, args.port, peers, announce_host=args.announce_host
        ) as node:
            addrs = node.multiaddrs
            if args.json:
                options.emit_json(
                    {"peer_id": node.peer_id, "multiaddrs": addrs, "initial_peers": peers}
                )
            else:
                print("\n".join(addrs), flush=True)
            if args.host in ("0.0.0.0", "::") and not args.announce_host:
                log.warning(
                    "listening on all interfaces: use --announce-host so the printed "
                    "addresses are ones others can dial"
                )
            log.info("bootstrap peer %s ready (%d initial peers)", node.peer_id, len(peers))
            async for signum in signals:
                log.info("%s received; closing", signal.Signals(signum).name)
                break
    return 0
