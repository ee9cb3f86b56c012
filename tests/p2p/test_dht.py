"""DHT nodes in one process, talking over real sockets on 127.0.0.1: announce, find,
withdraw, and storing nodes refusing bad records."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import pytest
import trio
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.peerinfo import PeerInfo
from libp2p.records.record import make_signed_put_record

from plexus.errors import RecordError
from plexus.identity import Identity
from plexus.p2p.dht import DHTConfig, DHTNode
from plexus.p2p.hygiene import prune
from plexus.p2p.keys import provider_keys, record_key
from plexus.p2p.records import (
    CLOCK_SKEW,
    MAX_RECORD_SIZE,
    SIGNATURE_DOMAIN,
    ServerRecord,
    encode_payload,
    make_record,
    sign_record,
)

MODEL = "sha256:" + "cd" * 32
FAST = DHTConfig(rpc_timeout=3.0, operation_timeout=10.0, connect_timeout=3.0)


def record_for(identity: Identity, start: int = 0, end: int = 3, ttl: float = 30) -> ServerRecord:
    return make_record(
        identity,
        model_id=MODEL,
        start=start,
        end=end,
        throughput=50.0,
        free_cache_tokens=2048,
        dtype="float32",
        data_addr="127.0.0.1:9",
        ttl=ttl,
    )


@asynccontextmanager
async def network(size: int, config: DHTConfig = FAST) -> AsyncIterator[list[DHTNode]]:
    """A bootstrap node plus `size - 1` nodes joined through it."""
    async with AsyncExitStack() as stack:
        boot = await stack.enter_async_context(DHTNode.open(Identity.generate(), config=config))
        nodes = [boot]
        for _ in range(size - 1):
            nodes.append(
                await stack.enter_async_context(
                    DHTNode.open(Identity.generate(), initial_peers=boot.multiaddrs, config=config)
                )
            )
        yield nodes


def envelope_of(identity: Identity, payload: bytes) -> bytes:
    signature = identity.sign(SIGNATURE_DOMAIN + payload)
    return b"PXR\x01" + identity.public_key_bytes + signature + payload


async def test_announce_find_withdraw() -> None:
    with trio.fail_after(40):
        async with network(4) as (boot, a, b, c):
            assert boot.multiaddrs[0].startswith("/ip4/127.0.0.1/tcp/")
            assert boot.multiaddrs[0].endswith(f"/p2p/{boot.peer_id}")
            done = await a.announce(record_for(a.identity, 0, 3))
            assert done.stored == 3 and done.providing >= 1
            await b.announce(record_for(b.identity, 4, 7))

            found = await c.find_servers(MODEL)
            assert [(r.peer_id, r.start, r.end) for r in found] == [
                (a.peer_id, 0, 3),
                (b.peer_id, 4, 7),
            ]
            assert await c.find_servers("sha256:other") == []

            # A newer announce replaces the older record everywhere.
            await a.announce(record_for(a.identity, 0, 5))
            found = await c.find_servers(MODEL)
            assert {(r.peer_id, r.end) for r in found} == {(a.peer_id, 5), (b.peer_id, 7)}

            assert await a.withdraw() >= 1
            found = await c.find_servers(MODEL)
            assert [r.peer_id for r in found] == [b.peer_id]
            assert await c.get_record(a.peer_id) is None
            assert (await c.get_record(b.peer_id)).end == 7  # type: ignore[union-attr]


async def test_expired_record_is_not_returned() -> None:
    with trio.fail_after(40):
        async with network(3) as (_, a, b):
            await a.announce(record_for(a.identity, ttl=1.5))
            assert [r.peer_id for r in await b.find_servers(MODEL)] == [a.peer_id]
            await trio.sleep(1.6)
            assert await b.find_servers(MODEL) == []


async def test_storing_nodes_refuse_bad_records() -> None:
    with trio.fail_after(40):
        async with network(2) as (boot, a):
            target = boot.host.get_id()
            key = record_key(a.peer_id)
            key_bytes = key.encode()
            mallory = Identity.generate()
            good = record_for(a.identity)
            valid = sign_record(good, a.identity)
            bad = {
                "forged": envelope_of(mallory, encode_payload(good)),
                "tampered": valid.replace(b'"end":3', b'"end":9'),
                "expired": sign_record(
                    replace(good, expires_at=time.time() - CLOCK_SKEW - 5), a.identity
                ),
                "oversized": envelope_of(
                    a.identity,
                    encode_payload(replace(good, extra={"pad": "x" * MAX_RECORD_SIZE})),
                ),
                "unsigned": encode_payload(good),
                "other peer's key": sign_record(record_for(mallory), mallory),
            }
            for name, blob in bad.items():
                assert not await a.rpc.put_value(target, key_bytes, blob), name
                assert boot.dht.value_store.get(key_bytes) is None, name
            # Namespaces other than /plexus/ are refused too (strict validation).
            assert not await a.rpc.put_value(target, b"/pk/anything", b"x")
            assert not await a.rpc.put_value(target, b"/other/key", valid)

            assert await a.rpc.put_value(target, key_bytes, valid)
            assert boot.dht.value_store.get(key_bytes).value == valid  # type: ignore[union-attr]
            # An older record cannot replace a newer one.
            older = sign_record(replace(good, seq=good.seq - 1), a.identity)
            assert not await a.rpc.put_value(target, key_bytes, older)
            assert boot.dht.value_store.get(key_bytes).value == valid  # type: ignore[union-attr]


async def test_readers_reject_bad_records_that_reach_them() -> None:
    """Storing nodes that skip validation cannot make a client accept a bad record."""
    with trio.fail_after(40):
        async with network(3) as (boot, a, b):
            await a.announce(record_for(a.identity, 0, 3))
            key = record_key(a.peer_id).encode()
            valid = boot.dht.value_store.get(key).value  # type: ignore[union-attr]
            tampered = valid.replace(b'"end":3', b'"end":9')
            assert tampered != valid
            # Every copy but the reader's is now tampered, by storing nodes that sign the
            # libp2p-level put record themselves (so py-libp2p's own check passes).
            for node in (boot, a):
                node.dht.value_store.put_record(
                    key, make_signed_put_record(key, tampered, node.host.get_private_key())
                )
            b.dht.value_store.remove(key)
            assert await b.get_record(a.peer_id) is None
            assert await b.find_servers(MODEL) == []


async def test_announce_refuses_a_record_of_another_peer() -> None:
    async with network(1) as (node,):
        with pytest.raises(RecordError):
            await node.announce(record_for(Identity.generate()))


async def test_prune_drops_expired_records_and_stale_providers() -> None:
    with trio.fail_after(40):
        async with network(2) as (boot, a):
            await a.announce(record_for(a.identity, ttl=5))
            key = record_key(a.peer_id).encode()
            assert boot.dht.value_store.get(key) is not None
            assert any(boot.dht.provider_store.get_providers(k) for k in provider_keys(MODEL))
            ttl = FAST.provider_ttl
            assert prune(boot.dht, now=time.time() + 1, provider_ttl=ttl) == (0, 0)
            assert boot.dht.value_store.get(key) is not None
            later = time.time() + 5 + CLOCK_SKEW + 1
            assert prune(boot.dht, now=later, provider_ttl=ttl) == (1, 0)
            assert boot.dht.value_store.get(key) is None
            assert prune(boot.dht, now=time.time() + ttl + 1, provider_ttl=ttl) == (0, 1)
            assert not any(boot.dht.provider_store.get_providers(k) for k in provider_keys(MODEL))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_node_started_before_its_bootstrap_joins_later() -> None:
    """The first dial fails (nothing listens yet); maintenance redials once it is up,
    past py-libp2p's 60 s negative dial cache."""
    config = replace(FAST, maintenance_period=0.3)
    boot_identity = Identity.generate()
    port = free_port()
    boot_addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{boot_identity.peer_id_str}"
    with trio.fail_after(30):
        async with DHTNode.open(Identity.generate(), initial_peers=[boot_addr], config=config) as a:
            assert a.connected_peers() == []
            async with DHTNode.open(boot_identity, port=port, config=config) as boot:
                while boot.peer_id not in a.connected_peers():
                    await trio.sleep(0.1)
                await a.announce(record_for(a.identity))
                assert [r.peer_id for r in await boot.find_servers(MODEL)] == [a.peer_id]


async def test_closing_a_node_closes_its_connections_at_once() -> None:
    """A node closed inside a process that lives on (a notebook, a test) must not stay
    ESTABLISHED to its peers: their requests would hang until timeout instead of failing."""
    with trio.fail_after(30):
        async with network(1) as (boot,):
            async with DHTNode.open(Identity.generate(), initial_peers=boot.multiaddrs) as a:
                gone = a.peer_id
                assert gone in boot.connected_peers()
            with trio.fail_after(FAST.rpc_timeout / 2):
                while gone in boot.connected_peers():
                    await trio.sleep(0.05)


async def test_a_stale_replica_does_not_hide_a_live_server() -> None:
    """The copies at the peers closest to a record's key lapsed (the owner's puts are
    slow), but the owner holds a fresh one: finders must look on, not report it gone."""
    with trio.fail_after(40):
        async with network(5) as nodes:
            owner, finder = _owner_far_from_its_key(nodes)
            key = record_key(owner.peer_id).encode()
            await owner.announce(record_for(owner.identity, ttl=1.0))
            assert finder.dht.value_store.get(key) is not None  # replicas everywhere
            await trio.sleep(1.2)
            fresh = sign_record(record_for(owner.identity, ttl=30), owner.identity)
            put = make_signed_put_record(key, fresh, owner.host.get_private_key())
            owner.dht.value_store.put_record(key, put)  # only the owner has it
            assert [r.peer_id for r in await finder.find_servers(MODEL)] == [owner.peer_id]


def _owner_far_from_its_key(nodes: list[DHTNode]) -> tuple[DHTNode, DHTNode]:
    """An (owner, finder) pair where the owner is not the finder's closest known peer to
    the owner's record key, so a finder that trusts its first answer asks someone else."""
    for owner in nodes:
        key = record_key(owner.peer_id).encode()
        for finder in nodes:
            known = finder.dht.routing_table.find_local_closest_peers(key, 20)
            known = [p for p in known if p != finder.host.get_id()]
            if owner is not finder and len(known) >= 3 and known[0] != owner.host.get_id():
                return owner, finder
    raise AssertionError("no owner far from its key in this network")


async def test_replicas_are_stored_while_a_walk_waits_on_a_silent_peer() -> None:
    """A peer that takes requests but never answers stalls a walk until its RPCs time
    out; the live peers must get the record meanwhile, not after."""
    slow = replace(FAST, rpc_timeout=15.0, operation_timeout=40.0)
    with trio.fail_after(40):
        async with network(2) as (boot, silent):

            async def never_answer(stream: object) -> None:
                await trio.sleep(30)

            async with DHTNode.open(
                Identity.generate(), initial_peers=boot.multiaddrs, config=slow
            ) as a:
                silent.host.set_stream_handler(KAD_PROTOCOL, never_answer)  # type: ignore[arg-type]
                if silent.host.get_id() not in a.dht.routing_table.get_peer_ids():
                    info = PeerInfo(silent.host.get_id(), silent.host.get_addrs())
                    await a.host.connect(info)
                    await a.dht.routing_table.add_peer(info)
                key = record_key(a.peer_id).encode()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(a.announce, record_for(a.identity))
                    with trio.fail_after(5):  # well before the silent peer's 15 s timeout
                        while boot.dht.value_store.get(key) is None:
                            await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()


async def test_announce_after_withdraw_does_nothing() -> None:
    """An announcement still scheduled when a server withdraws must not undo it."""
    with trio.fail_after(40):
        async with network(3) as (_, a, b):
            await a.announce(record_for(a.identity))
            assert await a.withdraw() >= 1
            done = await a.announce(record_for(a.identity))
            assert done.stored == 0
            assert await b.find_servers(MODEL) == []


async def test_an_announce_no_peer_took_is_retried_within_its_deadline() -> None:
    """A busy network can drop a joining server's first announce at every peer; the
    announce tries again (growing pauses) instead of leaving the server unfindable for a
    whole period, and the peer that reset its streams is not forgotten meanwhile."""
    with trio.fail_after(40):
        async with network(2) as (boot, a):
            real = boot.host.get_mux().handlers[KAD_PROTOCOL]
            dropped = 0

            async def drop_for_a_while(stream: object) -> None:
                nonlocal dropped
                dropped += 1
                await stream.reset()  # type: ignore[attr-defined]

            boot.host.set_stream_handler(KAD_PROTOCOL, drop_for_a_while)  # type: ignore[arg-type]
            async with trio.open_nursery() as nursery:

                async def answer_again_later() -> None:
                    await trio.sleep(1.0)
                    boot.host.set_stream_handler(KAD_PROTOCOL, real)  # type: ignore[arg-type]

                nursery.start_soon(answer_again_later)
                done = await a.announce(record_for(a.identity))
            assert dropped >= 1
            assert done.stored >= 1
            # A peer that resets streams is busy, not dead: it stays in the routing table.
            assert boot.host.get_id() in a.dht.routing_table.get_peer_ids()
            assert boot.dht.value_store.get(record_key(a.peer_id).encode()) is not None


async def test_a_withdrawal_does_not_wait_for_a_peer_that_never_answers() -> None:
    """When a whole swarm stops, some peers holding the record are leaving too and never
    answer; the withdrawal returns soon after the first peer took it, not after the RPC
    timeout (which would hold every server's exit)."""
    slow = replace(FAST, rpc_timeout=8.0, operation_timeout=15.0)
    with trio.fail_after(40):
        async with network(3, slow) as (boot, a, mute):
            await a.announce(record_for(a.identity))
            assert mute.dht.value_store.get(record_key(a.peer_id).encode()) is not None
            heard = 0

            async def never_answer(stream: object) -> None:
                nonlocal heard
                heard += 1
                await trio.sleep_forever()

            mute.host.set_stream_handler(KAD_PROTOCOL, never_answer)  # type: ignore[arg-type]
            started = trio.current_time()
            taken = await a.withdraw(linger=0.5)
            took = trio.current_time() - started
            assert heard >= 1  # the mute peer was asked
            assert taken >= 1  # the bootstrap took it
            assert took < 3.0, f"withdrawal took {took:.1f} s"
            assert await boot.get_record(a.peer_id) is None
