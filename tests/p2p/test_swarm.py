"""A real swarm: `plexus bootstrap` plus ten peer processes on 127.0.0.1. Every peer finds
every other through the bootstrap; a SIGKILLed peer disappears once its record expires;
the bootstrap exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PEERS = 10
PERIOD = 3.0
TTL = 2 * PERIOD
MODEL = "sha256:swarm-test"

pytestmark = pytest.mark.slow


class Proc:
    """A child process whose stdout lines are read by a thread, with deadlines."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            env=env,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def read_json(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no output within {timeout} s (exit {self.popen.poll()}); stderr:\n"
                + self.log.read_text(errors="replace")[-3000:]
            ) from None
        return json.loads(line)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    procs: list[Proc] = []
    env = {**os.environ, "PLEXUS_INITIAL_PEERS": "", "PYTHONUNBUFFERED": "1"}

    def start(name: str, *argv: str) -> Proc:
        proc = Proc([sys.executable, *argv], env, tmp_path / f"{name}.log")
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()


def find_all(peers: list[Proc], timeout: float) -> list[set[str]]:
    """Ask each peer in turn to find the model's servers (one at a time: ten lookups at
    once would starve the loaded test machine); their answers, in order."""
    answers = []
    for peer in peers:
        peer.send("find")
        answers.append(set(peer.read_json(timeout)["peers"]))
    return answers


def test_swarm_finds_everyone_and_forgets_the_dead(spawn: Any, tmp_path: Path) -> None:
    started = time.monotonic()
    boot = spawn(
        "bootstrap",
        "-m",
        "plexus",
        "bootstrap",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "boot"),
        "--json",
    )
    info = boot.read_json(timeout=30)
    assert info["multiaddrs"] and info["multiaddrs"][0].endswith("/p2p/" + info["peer_id"])
    assert info["multiaddrs"][0].startswith("/ip4/127.0.0.1/tcp/")

    peers = [
        spawn(
            f"peer{i}",
            "-m",
            "plexus.p2p._testpeer",
            "--initial-peers",
            *info["multiaddrs"],
            "--model",
            MODEL,
            "--start",
            str(i),
            "--end",
            str(i),
            "--period",
            str(PERIOD),
            "--ttl",
            str(TTL),
        )
        for i in range(PEERS)
    ]
    ready = [peer.read_json(timeout=60) for peer in peers]
    assert all(r["event"] == "ready" and r["stored"] >= 1 for r in ready), ready
    ids = [r["peer_id"] for r in ready]
    everyone = set(ids)
    assert len(everyone) == PEERS

    # Every peer finds every peer's record (its own included) through the bootstrap.
    deadline = time.monotonic() + 30
    pending = list(range(PEERS))
    while pending:
        assert time.monotonic() < deadline, f"peers {pending} never saw everyone"
        answers = find_all([peers[i] for i in pending], timeout=30)
        pending = [i for i, seen in zip(pending, answers, strict=True) if seen != everyone]

    # SIGKILL one: no withdrawal, so only its record's expiry can make it disappear.
    victim = ids[0]
    peers[0].kill()
    killed_at = time.monotonic()
    survivors = peers[1:]
    time.sleep(max(0.0, killed_at + TTL + 0.5 - time.monotonic()))
    # From now on the victim must never be returned; the live ones must be (a loaded
    # machine may delay an announce past its expiry, so each survivor gets a few tries).
    alive = everyone - {victim}
    deadline = time.monotonic() + 30
    pending = list(range(len(survivors)))
    while pending:
        assert time.monotonic() < deadline, f"survivors {pending} never saw all the living"
        answers = find_all([survivors[i] for i in pending], timeout=30)
        assert all(victim not in seen for seen in answers), "a dead peer outlived its record"
        pending = [i for i, seen in zip(pending, answers, strict=True) if seen != alive]

    # The bootstrap closes cleanly on SIGTERM.
    boot.popen.send_signal(signal.SIGTERM)
    assert boot.popen.wait(timeout=15) == 0
    assert time.monotonic() - started < 120
