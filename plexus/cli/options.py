"""Options every command shares, so scripts and tests can rely on them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from plexus.p2p.peers_list import default_peers
from plexus.paths import default_data_dir


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder for this peer's identity, ledger and caches "
        "(env PLEXUS_DATA_DIR; default ~/.local/share/plexus)",
    )


def data_dir(args: argparse.Namespace) -> Path:
    chosen = getattr(args, "data_dir", None)
    path = Path(chosen).expanduser() if chosen else default_data_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def add_initial_peers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--initial-peers",
        nargs="+",
        metavar="ADDR",
        default=None,
        help="multiaddrs of peers to join through, e.g. /ip4/1.2.3.4/tcp/31337/p2p/12D3KooW... "
        "(env PLEXUS_INITIAL_PEERS, separated by spaces or commas; default: the peers-list "
        "file DATA_DIR/peers.txt, else the list packaged with Plexus)",
    )


def initial_peers(args: argparse.Namespace) -> list[str]:
    """Peers from --initial-peers, else $PLEXUS_INITIAL_PEERS (set but blank: none), else
    the peers-list file <data-dir>/peers.txt, else the list packaged with Plexus."""
    chosen = getattr(args, "initial_peers", None)
    if chosen:
        return [p for item in chosen for p in item.replace(",", " ").split() if p]
    env = os.environ.get("PLEXUS_INITIAL_PEERS")
    if env is not None:
        return [p for p in env.replace(",", " ").split() if p]
    return default_peers(data_dir(args))


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one machine-readable JSON object on stdout"
    )


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=os.environ.get("PLEXUS_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log on stderr (env PLEXUS_LOG_LEVEL; default INFO)",
    )


def add_common(parser: argparse.ArgumentParser, *, network: bool, reporting: bool) -> None:
    add_data_dir(parser)
    add_log_level(parser)
    if network:
        add_initial_peers(parser)
    if reporting:
        add_json(parser)


def emit_json(payload: dict[str, Any]) -> None:
    json.dump(payload, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    sys.stdout.flush()


def add_emulate_latency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--emulate-latency",
        default=None,
        metavar="DELAY[:JITTER]",
        help="TESTING ONLY: hold everything this peer sends on the data plane for DELAY "
        "(plus up to JITTER), e.g. 20ms or 20ms:5ms, to emulate a wide-area network",
    )


def emulated_latency(args: argparse.Namespace) -> tuple[float, float]:
    """(delay, jitter) in seconds from --emulate-latency; (0, 0) when off."""
    text = getattr(args, "emulate_latency", None)
    if not text:
        return 0.0, 0.0
    delay, _, jitter = text.partition(":")
    values = (_seconds(delay), _seconds(jitter) if jitter else 0.0)
    import logging

    logging.getLogger("plexus").warning(
        "LATENCY EMULATION ON: every data-plane message this peer sends is held %.1f ms "
        "(+ up to %.1f ms jitter). This is a testing feature.",
        values[0] * 1000,
        values[1] * 1000,
    )
    return values


def _seconds(text: str) -> float:
    from plexus.errors import ConfigError

    units = {"ms": 0.001, "s": 1.0}
    for suffix, scale in units.items():
        if text.endswith(suffix):
            try:
                value = float(text[: -len(suffix)]) * scale
            except ValueError:
                break
            if 0 <= value <= 10:
                return value
            break
    raise ConfigError(f"--emulate-latency wants values like 20ms or 0.02s (0-10 s), not {text!r}")
