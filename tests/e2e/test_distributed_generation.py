"""Generation through server processes equals transformers' generate(), with failover."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
import trio
from transformers import AutoModelForCausalLM

from plexus.client import AsyncClient
from plexus.local_swarm import LocalSwarm, PeerProcess
from tests.e2e.helpers import start_servers, wait_for_servers

pytestmark = pytest.mark.slow
NEW_TOKENS = 16


def reference(folder: Path, prompt: list[int], new_tokens: int) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


async def generate_via(
    boot: str,
    folder: Path,
    data_dir: Path,
    prompt: list[int],
    servers: int,
    blocked: list[str],
    forwarding: bool,
) -> tuple[list[int], list[dict], int]:
    """Token ids, route and the number of server-to-server legs taken."""
    async with AsyncClient.connect(
        str(folder),
        initial_peers=[boot],
        data_dir=data_dir,
        block_servers=blocked,
        forwarding=forwarding,
    ) as client:
        await wait_for_servers(client, servers)
        session = await client.open_session(len(prompt) + NEW_TOKENS)
        result = await client.generate_ids(
            prompt, max_new_tokens=NEW_TOKENS, eos=False, session=session
        )
        await session.close()
        return result.token_ids, result.route, session.forwarded_legs


@pytest.mark.parametrize("family", ["tiny", "llama", "mistral", "qwen2"])
def test_two_and_three_servers_equal_generate(
    local_swarm: LocalSwarm, model_dirs: dict[str, Path], tmp_path: Path, family: str
) -> None:
    folder = model_dirs[family]
    n = AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers
    a, b = n // 3, 2 * n // 3
    # Four servers give both chains: the first third's server starts each of them,
    # then the rest in one span (2 servers) or in two thirds (3 servers).
    spans = [f"0-{a - 1}", f"{a}-{n - 1}", f"{a}-{b - 1}", f"{b}-{n - 1}"]
    procs = start_servers(local_swarm, str(folder), spans)
    first, rest, middle, last = (p.peer_id for p in procs)
    prompt = torch.randint(3, 90, (9,), generator=torch.Generator().manual_seed(7)).tolist()
    expected = reference(folder, prompt, NEW_TOKENS)
    assert len(set(expected)) > 2
    boot = local_swarm.initial_peers[0]
    # Servers publish round trips to the servers holding the blocks after theirs.
    pairs = [(first, rest), (first, middle), (middle, last)]
    rtts = trio.run(published_rtts, boot, folder, tmp_path / "c", pairs)
    assert all(0 < rtt < 1000 for rtt in rtts)
    for use, avoid in (([first, rest], [middle, last]), ([first, middle, last], [rest])):
        for forwarding in (True, False):
            tokens, route, legs = trio.run(
                generate_via, boot, folder, tmp_path / "c", prompt, len(procs), avoid, forwarding
            )
            assert [h["peer_id"] for h in route] == use
            assert tokens == expected, f"forwarding={forwarding}, {len(use)} servers"
            # one leg between each pair of servers per step (prefill + NEW_TOKENS - 1)
            assert legs == ((len(use) - 1) * NEW_TOKENS if forwarding else 0)


async def published_rtts(
    boot: str, folder: Path, data_dir: Path, pairs: list[tuple[str, str]]
) -> list[float]:
    """The round trips (ms) each first server publishes to the second (waits up to 30 s)."""
    async with AsyncClient.connect(str(folder), initial_peers=[boot], data_dir=data_dir) as c:
        found: dict[tuple[str, str], float] = {}
        with trio.fail_after(30):
            while len(found) < len(pairs):
                records = {r.peer_id: r for r in await c.swarm.node.find_servers(c.swarm.model_id)}
                for peer, to in pairs:
                    extra = (records[peer].extra or {}) if peer in records else {}
                    if to in extra.get("next_rtt_ms", {}):
                        found[(peer, to)] = float(extra["next_rtt_ms"][to])
                await trio.sleep(0.5)
        return [found[pair] for pair in pairs]


def _victim(route: list[dict], servers: list[PeerProcess], block: int) -> PeerProcess:
    peer = next(h["peer_id"] for h in route if h["start"] <= block <= h["end"])
    return next(s for s in servers if s.peer_id == peer)


async def _failover_run(
    boot: str,
    folder: Path,
    data_dir: Path,
    prompt: list[int],
    servers: list[PeerProcess],
    when: str,
    victim_block: int = 5,
    forwarding: bool = True,
) -> tuple[list[int], int, str]:
    async with AsyncClient.connect(
        str(folder), initial_peers=[boot], data_dir=data_dir, forwarding=forwarding
    ) as c:
        await wait_for_servers(c, len(servers))
        session = await c.open_session(len(prompt) + NEW_TOKENS)
        killed: list[PeerProcess] = []
        if when == "prefill":  # the server dies after the session opened, before prefill
            killed.append(_victim(session.route, servers, victim_block))
            killed[0].signal(signal.SIGKILL)
            killed[0].wait(10)

        def on_token(_: int) -> None:
            if when == "decode" and len(seen) == 5 and not killed:
                killed.append(_victim(session.route, servers, victim_block))
                killed[0].signal(signal.SIGKILL)
                killed[0].wait(10)
            seen.append(_)

        seen: list[int] = []
        result = await c.generate_ids(
            prompt, max_new_tokens=NEW_TOKENS, eos=False, session=session, on_token=on_token
        )
        await session.close()
        replacement = _victim(result.route, servers, victim_block)
        assert replacement is not killed[0]
        if forwarding:
            assert session.forwarded_legs > 0
        if when == "decode" and victim_block == 5:  # the last server: a commitment was due
            # Its last output, never committed to, was compared with the replay: it agreed.
            assert c.auditor is not None
            assert (c.auditor.stats.unproven, c.auditor.stats.unproven_wrong) == (1, 0)
            assert killed[0].peer_id not in c.auditor.caught_at
        return result.token_ids, result.failovers, killed[0].peer_id


@pytest.mark.parametrize("when", ["prefill", "decode"])
def test_sigkill_mid_generation_does_not_change_the_output(
    local_swarm: LocalSwarm, model_dirs: dict[str, Path], tmp_path: Path, when: str
) -> None:
    folder = model_dirs["tiny"]
    servers = start_servers(local_swarm, str(folder), ["0-3", "4-7", "4-7"])
    prompt = list(b"Plexus keeps going")
    expected = reference(folder, prompt, NEW_TOKENS)
    tokens, failovers, _ = trio.run(
        _failover_run, local_swarm.initial_peers[0], folder, tmp_path / "c", prompt, servers, when
    )
    assert failovers >= 1
    assert tokens == expected


@pytest.mark.parametrize("forwarding", [True, False])
def test_sigkill_of_the_middle_server_does_not_change_the_output(
    local_swarm: LocalSwarm, model_dirs: dict[str, Path], tmp_path: Path, forwarding: bool
) -> None:
    """Three hops; the middle server, which the first forwards to, dies mid-decode."""
    folder = model_dirs["tiny"]
    servers = start_servers(local_swarm, str(folder), ["0-2", "3-5", "3-5", "6-7"])
    prompt = list(b"the middle one falls")
    expected = reference(folder, prompt, NEW_TOKENS)
    tokens, failovers, _ = trio.run(
        _failover_run,
        local_swarm.initial_peers[0],
        folder,
        tmp_path / "c",
        prompt,
        servers,
        "decode",
        4,
        forwarding,
    )
    assert failovers >= 1
    assert tokens == expected
