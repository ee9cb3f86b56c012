"""Peers-list files and where commands take their initial peers from."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from plexus.cli import options
from plexus.errors import ConfigError
from plexus.p2p import peers_list
from plexus.p2p.addrs import peer_infos

REPO = Path(__file__).resolve().parents[2]
A = "/ip4/203.0.113.1/tcp/31337/p2p/12D3KooWEfY2TmhEWp1scTkNTgGcB6sBdaeicFJXJjeBmUpFMyg8"
B = "/ip4/203.0.113.2/tcp/31337/p2p/12D3KooWEfY2TmhEWp1scTkNTgGcB6sBdaeicFJXJjeBmUpFMyg8"


def test_parse_skips_comments_and_blank_lines() -> None:
    text = f"# header\n\n  {A}  # first\n#{B}\n{B}\n"
    assert peers_list.parse_peers_list(text) == [A, B]


def test_packaged_list_matches_bootstrap_peers_txt() -> None:
    text = (REPO / "bootstrap" / "peers.txt").read_text()
    assert peers_list.parse_peers_list(text) == list(peers_list.DEFAULT_PEERS)
    peer_infos(peers_list.DEFAULT_PEERS)  # every line is a valid peer address


def test_two_addresses_of_one_peer_merge() -> None:
    (info,) = peer_infos([A, B])
    assert [str(a) for a in info.addrs] == [
        "/ip4/203.0.113.1/tcp/31337",
        "/ip4/203.0.113.2/tcp/31337",
    ]


@pytest.mark.parametrize(
    "bad", ["/ip4/1.2.3.4/tcp/1", "not-a-multiaddr", "/ip4/1.2.3.4/tcp/1/p2p/xyz"]
)
def test_bad_peer_addresses_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        peer_infos([bad])


def args_for(data_dir: Path, chosen: list[str] | None = None) -> argparse.Namespace:
    return argparse.Namespace(initial_peers=chosen, data_dir=data_dir)


def test_initial_peers_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLEXUS_INITIAL_PEERS", raising=False)
    monkeypatch.setattr(peers_list, "DEFAULT_PEERS", (B,))
    # Nothing given: the packaged list.
    assert options.initial_peers(args_for(tmp_path)) == [B]
    # A peers.txt in the data dir wins over the packaged list.
    (tmp_path / "peers.txt").write_text(f"# mine\n{A}\n")
    assert options.initial_peers(args_for(tmp_path)) == [A]
    # The environment wins over files; set but blank means "no peers".
    monkeypatch.setenv("PLEXUS_INITIAL_PEERS", f"{B}, {A}")
    assert options.initial_peers(args_for(tmp_path)) == [B, A]
    monkeypatch.setenv("PLEXUS_INITIAL_PEERS", "")
    assert options.initial_peers(args_for(tmp_path)) == []
    # --initial-peers wins over everything.
    assert options.initial_peers(args_for(tmp_path, [f"{A},{B}"])) == [A, B]


def test_unreadable_peers_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "peers.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError):
        peers_list.default_peers(tmp_path)
