"""Multiaddr helpers: the listen address, the advertised addresses, the initial peers."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from multiaddr import Multiaddr

from plexus.errors import ConfigError, NetworkError


def tcp_multiaddr(host: str, port: int) -> Multiaddr:
    """`/ip4/H/tcp/P`, `/ip6/H/tcp/P` or `/dns/H/tcp/P` for a host string."""
    if not 0 <= port < 65536:
        raise ConfigError(f"port {port} out of range")
    try:
        proto = "ip6" if ipaddress.ip_address(host.strip("[]")).version == 6 else "ip4"
        host = host.strip("[]")
    except ValueError:
        proto = "dns"
    try:
        return Multiaddr(f"/{proto}/{host}/tcp/{port}")
    except Exception as exc:  # multiaddr raises its own assorted error types
        raise ConfigError(f"bad host {host!r}: {exc}") from exc


def ensure_port_free(host: str, port: int) -> None:
    """Raise NetworkError if `host:port` is taken or `host` is not a local address.
    py-libp2p listens with SO_REUSEPORT, so a second peer on a busy port would silently
    share it (the kernel splitting the connections between the two) instead of failing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise NetworkError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def peer_infos(addrs: Iterable[str]) -> list[PeerInfo]:
    """Parse `/ip4/.../tcp/P/p2p/<peer-id>` strings; several addresses of one peer merge."""
    by_peer: dict[str, PeerInfo] = {}
    for text in addrs:
        try:
            info = info_from_p2p_addr(Multiaddr(text.strip()))
        except Exception as exc:  # multiaddr / peer id decoding errors
            raise ConfigError(
                f"bad peer address {text!r} (want /ip4/HOST/tcp/PORT/p2p/PEER_ID): {exc}"
            ) from exc
        key = info.peer_id.to_base58()
        if key in by_peer:
            by_peer[key].addrs.extend(a for a in info.addrs if a not in by_peer[key].addrs)
        else:
            by_peer[key] = info
    return list(by_peer.values())


def announce_rewriter(announce_host: str) -> Callable[[list[Multiaddr]], list[Multiaddr]]:
    """An addrs_factory for new_host advertising `announce_host` on each listening port
    (for a server bound to 0.0.0.0 behind a known public address)."""

    def rewrite(candidates: list[Multiaddr]) -> list[Multiaddr]:
        ports = []
        for addr in candidates:
            try:
                port = int(addr.value_for_protocol("tcp"))
            except Exception:  # no tcp component
                continue
            if port not in ports:
                ports.append(port)
        return [tcp_multiaddr(announce_host, port) for port in ports]

    return rewrite
