"""The documented examples and `plexus chat --json` against a real local swarm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plexus.local_swarm import LocalSwarm
from tests.e2e.helpers import start_servers

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def run(args: list[str], swarm: LocalSwarm, data_dir: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PLEXUS_INITIAL_PEERS": " ".join(swarm.initial_peers),
        "PLEXUS_DATA_DIR": str(data_dir),
    }
    return subprocess.run(args, capture_output=True, text=True, timeout=180, env=env, check=False)


def test_examples_and_chat_cli(local_swarm: LocalSwarm, tmp_path: Path) -> None:
    start_servers(local_swarm, "plexus-tiny", ["0-4", "5-7"])
    done = run([sys.executable, str(EXAMPLES / "sync_generate.py")], local_swarm, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "blocks 0-4 on" in done.stdout and "blocks 5-7 on" in done.stdout
    assert "tokens/s" in done.stdout
    quiet(done.stderr)

    done = run([sys.executable, str(EXAMPLES / "async_chat.py")], local_swarm, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    quiet(done.stderr)
    assert done.stdout.count("assistant:") == 2
    assert "refused: the prompt is empty" in done.stdout

    done = run(
        [
            sys.executable,
            "-m",
            "plexus",
            "chat",
            "--prompt",
            "hi",
            "--json",
            "--max-new-tokens",
            "7",
        ],
        local_swarm,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert len(report["token_ids"]) <= 7
    assert {"text", "token_ids", "route", "tokens_per_s"} <= report.keys()
    assert [(h["start"], h["end"]) for h in report["route"]] == [(0, 4), (5, 7)]

    chat = subprocess.run(
        [sys.executable, "-m", "plexus", "chat", "--max-new-tokens", "4"],
        input="hello\n/reset\nhello again\n/quit\n",
        capture_output=True,
        text=True,
        timeout=180,
        env={
            **os.environ,
            "PLEXUS_INITIAL_PEERS": local_swarm.initial_peers[0],
            "PLEXUS_DATA_DIR": str(tmp_path),
        },
        check=False,
    )
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert chat.stdout.count("model> ") == 2
    assert "(conversation forgotten)" in chat.stderr
    assert chat.stderr.count("tokens/s") == 2


def quiet(stderr: str) -> None:
    """A script using the library sees none of py-libp2p's routine peer warnings (its
    loggers bypass the application's logging setup unless Plexus routes them)."""
    noise = [line for line in stderr.splitlines() if "Failed to" in line or "libp2p" in line]
    assert not noise, "\n".join(noise[:10])


def test_demo_runs_a_swarm_and_survives_a_kill(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "plexus",
            "demo",
            "--json",
            "--data-dir",
            str(tmp_path),
            "--max-new-tokens",
            "12",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert [r["label"] for r in report["runs"]] == ["swarm", "failover"]
    assert report["runs"][1]["failovers"] >= 1
    assert report["runs"][0]["token_ids"] == report["runs"][1]["token_ids"]
    assert len(report["servers"]) == 4
    # New servers are audited on every request, on the other server of their blocks: both
    # hops of the first run, the 0-3 hop of the second (after the kill blocks 4-7 have no
    # second server left, so that audit is unavailable). None may fail.
    audits, receipts = report["audits"], report["receipts"]
    assert audits["audits"] >= 2 and audits["failed"] == 0 and audits["convictions"] == 0
    assert audits["passed"] == audits["audits"]
    assert audits["unavailable"] <= 1 and audits["skipped"] == 0
    # Every server of each run's (final) route closed its session: its receipts are stored,
    # doubly signed, and it was paid; nothing else was.
    demo_servers = {s["peer_id"] for s in report["servers"]}
    for run in report["runs"]:
        for hop in run["route"]:
            assert receipts["count_by_server"].get(hop["peer_id"], 0) >= 1, hop
            assert receipts["credits_by_server"][hop["peer_id"]] > 0, hop
    assert set(receipts["count_by_server"]) <= demo_servers
    assert receipts["count"] == sum(receipts["count_by_server"].values())
    assert receipts["client_balance"] == pytest.approx(-sum(receipts["credits_by_server"].values()))
    # Only the one hop left without a second server goes unaudited.
    unaudited = [line for line in done.stderr.splitlines() if "no other server could audit" in line]
    assert len(unaudited) == audits["unavailable"]
    assert all(line.endswith("blocks 4-7") for line in unaudited)
