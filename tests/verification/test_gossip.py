"""Receipts and fraud proofs gossiped between two peers' ledgers over gossipsub; bad ones
are refused with their reason and not stored."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from ledger import LedgerStore, Receipt, issue
from ledger.engine import sqlite_url
from plexus.identity import Identity
from plexus.p2p.dht import DHTConfig, DHTNode
from plexus.p2p.ledger_gossip import LedgerGossip
from plexus.verification import NETWORK_ID
from plexus.verification.proofs import check_fraud_proof


def receipt(server: Identity, client: Identity, seq: int, amount: int) -> bytes:
    r = Receipt(
        NETWORK_ID, "m", 0, 3, b"s" * 16, seq, 4, seq, amount, bytes(32), bytes(32),
        int(time.time()), server.public_key_bytes, client.public_key_bytes,
    )  # fmt: skip
    return issue(r, server.signing_key, client.signing_key).encode()


async def wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.1)


def test_gossip_validates_before_storing(tmp_path: Path) -> None:
    server, client = Identity.generate(os.urandom(32)), Identity.generate(os.urandom(32))
    stores = [LedgerStore(sqlite_url(tmp_path / f"{i}.sqlite"), NETWORK_ID) for i in range(2)]
    good = receipt(server, client, 1, 1000)
    forged = bytearray(receipt(server, client, 2, 2000))
    forged[-1] ^= 1  # the client's signature no longer verifies
    lower = receipt(server, client, 3, 10)  # cumulative amount going down

    async def main() -> None:
        config = DHTConfig(rpc_timeout=2, operation_timeout=5, maintenance_period=1)
        async with (
            DHTNode.open(Identity.generate(), config=config) as a,
            DHTNode.open(Identity.generate(), initial_peers=a.multiaddrs, config=config) as b,
            LedgerGossip.open(a.host, stores[0], check_fraud_proof) as ga,
            LedgerGossip.open(b.host, stores[1], check_fraud_proof) as gb,
        ):
            await wait_for(lambda: ga.pubsub.peer_topics and gb.pubsub.peer_topics, 15)
            await trio.sleep(1.0)
            for data in (good, bytes(forged), lower):
                await ga.publish("receipt", data)
            await wait_for(lambda: gb.accepted["receipt"] >= 1, 15)
            await wait_for(lambda: sum(ga.rejected.values()) >= 2, 15)

    trio.run(main)
    assert stores[1].receipt_ids() == stores[0].receipt_ids() and len(stores[1].receipt_ids()) == 1
    refused = stores[0].rejection_counts()["receipt"]
    assert refused == {"forged_signature": 1, "cumulative_decreased": 1}
    for store in stores:
        store.close()
