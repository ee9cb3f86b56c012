"""Peers-list files (format of bootstrap/peers.txt): one multiaddr per line, `#` starts a
comment, blank lines ignored. Used when no --initial-peers / $PLEXUS_INITIAL_PEERS is given:
first `<data-dir>/peers.txt`, then the list packaged with Plexus (DEFAULT_PEERS)."""

from __future__ import annotations

from pathlib import Path

from plexus.errors import ConfigError

PEERS_FILE_NAME = "peers.txt"

DEFAULT_PEERS: tuple[str, ...] = ()
"""The packaged list: the addresses in bootstrap/peers.txt (a test keeps them equal).
Empty until the project runs public bootstrap peers."""


def parse_peers_list(text: str) -> list[str]:
    peers = []
    for line in text.splitlines():
        addr = line.split("#", 1)[0].strip()
        if addr:
            peers.append(addr)
    return peers


def load_peers_file(path: Path) -> list[str]:
    try:
        return parse_peers_list(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read peers list {path}: {exc}") from exc


def default_peers(data_dir: Path) -> list[str]:
    """`<data_dir>/peers.txt` if it exists, else the packaged DEFAULT_PEERS."""
    path = data_dir / PEERS_FILE_NAME
    if path.is_file():
        return load_peers_file(path)
    return list(DEFAULT_PEERS)
