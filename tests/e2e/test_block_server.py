"""`plexus serve` and `plexus swarm` as real processes (issue: block server)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch
import trio

from plexus.client import AsyncClient
from plexus.client.pool import ConnectionPool
from plexus.identity import Identity
from plexus.local_swarm import LocalSwarm
from plexus.p2p.dataplane import Message, RemoteError
from plexus.p2p.dht import DHTNode
from plexus.server.errors import ServerCode
from tests.e2e.helpers import start_servers, swarm_json, wait_for_servers

pytestmark = pytest.mark.slow
ANNOUNCE_PERIOD = 2.0


def test_coverage_and_automatic_span(
    local_swarm: LocalSwarm, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    tiny = str(model_dirs["tiny"])
    first = start_servers(local_swarm, tiny, ["0-3", "4-7"])
    report = swarm_json(local_swarm, tiny, str(tmp_path / "look"))
    assert report["fully_covered"], report
    assert report["coverage"] == [1] * 8
    assert {s["peer_id"] for s in report["servers"]} == {p.peer_id for p in first}

    third = start_servers(local_swarm, tiny, [""], "--num-blocks", "3")[0]
    assert third.info["end"] - third.info["start"] == 2
    report = swarm_json(local_swarm, tiny, str(tmp_path / "look"))
    listed = {s["peer_id"]: (s["start"], s["end"]) for s in report["servers"]}
    assert listed[third.peer_id] == (third.info["start"], third.info["end"])
    assert sum(report["coverage"]) == 8 + 3


async def _seconds_until_gone(
    multiaddr: str, model_id: str, peer_id: str, limit: float, staying: str
) -> float:
    """Seconds until `peer_id` is no longer listed; `staying` must be listed all along."""
    started = trio.current_time()
    async with DHTNode.open(Identity.generate(), "127.0.0.1", 0, [multiaddr]) as node:
        with trio.fail_after(limit):
            while True:
                listed = {r.peer_id for r in await node.find_servers(model_id)}
                waited = trio.current_time() - started
                assert staying in listed, f"a live server went unlisted after {waited:.1f} s"
                if peer_id not in listed:
                    return waited
                await trio.sleep(0.25)


def test_sigterm_exits_0_and_sigkill_expires(
    local_swarm: LocalSwarm, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    tiny = str(model_dirs["tiny"])
    polite, killed, other = start_servers(local_swarm, tiny, ["0-3", "0-3", "4-7"])
    model_id = polite.info["model_id"]
    boot = local_swarm.initial_peers[0]

    polite.signal(signal.SIGTERM)
    assert polite.wait(30) == 0
    gone = trio.run(_seconds_until_gone, boot, model_id, polite.peer_id, 30.0, other.peer_id)
    assert gone <= ANNOUNCE_PERIOD + 1.0, f"withdrawn server still listed after {gone:.1f} s"

    killed.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    trio.run(_seconds_until_gone, boot, model_id, killed.peer_id, 30.0, other.peer_id)
    elapsed = time.monotonic() - killed_at
    assert elapsed <= 2 * ANNOUNCE_PERIOD + 2.0, f"killed server listed for {elapsed:.1f} s"
    report = swarm_json(local_swarm, tiny, str(tmp_path / "look"))
    assert {s["peer_id"] for s in report["servers"]} == {other.peer_id}
    assert report["missing_blocks"] == [0, 1, 2, 3]


async def _generate_all(
    boot: str, data_dir: Path, prompts: list[list[int]], concurrent: bool
) -> tuple[list[list[int]], dict]:
    async with AsyncClient.connect("plexus-tiny", initial_peers=[boot], data_dir=data_dir) as c:
        await wait_for_servers(c, 1)
        results: dict[int, list[int]] = {}

        async def one(i: int) -> None:
            r = await c.generate_ids(prompts[i], max_new_tokens=12, eos=False)
            results[i] = r.token_ids

        if concurrent:
            async with trio.open_nursery() as nursery:
                for i in range(len(prompts)):
                    nursery.start_soon(one, i)
        else:
            for i in range(len(prompts)):
                await one(i)
        server = next(iter(c.swarm.servers.values()))
        conn = await c.swarm.pool.get(server.peer_id, server.address)
        info = (await conn.request(Message("info"), timeout=10)).fields
        return [results[i] for i in range(len(prompts))], info


def test_eight_concurrent_sessions_equal_one_at_a_time(
    local_swarm: LocalSwarm, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    start_servers(local_swarm, str(model_dirs["tiny"]), ["0-7"])
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 256, (3 + i,), generator=gen).tolist() for i in range(8)]
    boot = local_swarm.initial_peers[0]
    together, info = trio.run(_generate_all, boot, tmp_path / "c", prompts, True)
    alone, _ = trio.run(_generate_all, boot, tmp_path / "c", prompts, False)
    assert together == alone
    assert all(len(t) == 12 for t in together)
    assert info["batched_steps"] > 0, "concurrent decode steps were never batched"


async def _exhaust_cache(boot: str, data_dir: Path) -> None:
    async with AsyncClient.connect("plexus-tiny", initial_peers=[boot], data_dir=data_dir) as c:
        await wait_for_servers(c, 1)
        server = next(iter(c.swarm.servers.values()))
        conn = await c.swarm.pool.get(server.peer_id, server.address)
        hog = Message(
            "open", {"model_id": c.swarm.model_id, "start": 0, "end": 7, "max_length": 40}
        )
        await conn.request(hog, timeout=10)  # 40 of 64 tokens
        with pytest.raises(RemoteError) as err:
            await conn.request(hog, timeout=10)
        assert err.value.code == ServerCode.CACHE_EXHAUSTED
        assert "cache tokens" in err.value.remote_message
        # The server keeps serving a session that fits.
        result = await c.generate_ids([1, 2, 3], max_new_tokens=5, eos=False)
        assert len(result.token_ids) == 5
        # A client that disconnects leaves no sessions behind: its cache is free again.
        # Another client watches: were this one to reconnect at once, the server could
        # see the new connection before the old one's end, and rightly keep its sessions.
        await c.swarm.pool.drop(server.peer_id)
        async with ConnectionPool.open(Identity.generate()) as other:
            conn = await other.get(server.peer_id, server.address)
            with trio.fail_after(10):
                while (await conn.request(Message("info"), timeout=10)).fields["sessions"]:
                    await trio.sleep(0.1)
            await conn.request(hog, timeout=10)


def test_cache_exhausted_is_reported_and_others_are_served(
    local_swarm: LocalSwarm, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    start_servers(local_swarm, str(model_dirs["tiny"]), ["0-7"], "--cache-tokens", "64")
    trio.run(_exhaust_cache, local_swarm.initial_peers[0], tmp_path / "c")


async def _span_of(multiaddr: str, model_id: str, peer_id: str, want: tuple[int, int]) -> float:
    started = trio.current_time()
    async with DHTNode.open(Identity.generate(), "127.0.0.1", 0, [multiaddr]) as node:
        with trio.fail_after(60):
            while True:
                spans = {r.peer_id: (r.start, r.end) for r in await node.find_servers(model_id)}
                if spans.get(peer_id) == want:
                    return trio.current_time() - started
                await trio.sleep(0.5)


def test_server_moves_to_blocks_nobody_serves(
    local_swarm: LocalSwarm, model_dirs: dict[str, Path]
) -> None:
    tiny = str(model_dirs["tiny"])
    first = start_servers(local_swarm, tiny, ["0-3"])[0]
    mover = local_swarm.start_server(
        tiny, None, "--num-blocks", "4", "--announce-period", "2", "--rebalance-period", "2"
    )
    assert (mover.info["start"], mover.info["end"]) == (4, 7), "uncovered blocks come first"
    start_servers(local_swarm, tiny, ["4-7"])
    first.signal(signal.SIGKILL)
    # Blocks 0-3 are now unserved; the mover's 4-7 is covered by the new server.
    trio.run(_span_of, local_swarm.initial_peers[0], mover.info["model_id"], mover.peer_id, (0, 3))
