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

    done = run([sys.executable, str(EXAMPLES / "async_chat.py")], local_swarm, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
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
    # Hops were audited on the other server of their blocks (after the kill, blocks 4-7
    # have no second server left: that audit is unavailable); every session left receipts.
    audits, receipts = report["audits"], report["receipts"]
    assert audits["audits"] >= 2 and audits["failed"] == 0
    assert audits["passed"] == audits["audits"]
    servers_used = {h["peer_id"] for r in report["runs"] for h in r["route"]}
    assert set(receipts["credits_by_server"]) == servers_used
    assert receipts["count"] >= len(servers_used)
    assert all(v > 0 for v in receipts["credits_by_server"].values())
    assert receipts["client_balance"] == pytest.approx(-sum(receipts["credits_by_server"].values()))
