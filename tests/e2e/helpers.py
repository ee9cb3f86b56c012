"""Helpers for the multi-process tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import trio

from plexus.local_swarm import LocalSwarm, PeerProcess

ANNOUNCE = ["--announce-period", "2", "--no-rebalance"]


def start_servers(
    swarm: LocalSwarm, model: str, spans: list[str], *extra: str
) -> list[PeerProcess]:
    """Start servers in parallel (their start-up is mostly imports)."""
    with ThreadPoolExecutor(len(spans)) as pool:
        return list(pool.map(lambda s: swarm.start_server(model, s, *ANNOUNCE, *extra), spans))


def swarm_json(swarm: LocalSwarm, model: str, data_dir: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "plexus",
            "swarm",
            "--model",
            model,
            "--json",
            "--initial-peers",
            *swarm.initial_peers,
            "--data-dir",
            data_dir,
            "--log-level",
            "WARNING",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate` until true; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def wait_for_servers(client, count: int, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Until the client's DHT lookups see `count` live servers of its model."""
    with trio.fail_after(timeout):
        while True:
            found = await client.swarm.node.find_servers(client.swarm.model_id)
            if len(found) >= count:
                await client.swarm.refresh(force=True)
                return
            await trio.sleep(0.5)
