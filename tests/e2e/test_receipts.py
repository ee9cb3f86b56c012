"""Issue 6 acceptance: a chat session through two servers leaves matching, doubly signed
receipts in the client's and the servers' ledgers, and balances move by the same amounts."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ledger import LedgerStore
from ledger.engine import sqlite_url
from ledger.receipts import check_signatures
from plexus.client import AsyncClient
from plexus.identity import public_key_of
from plexus.local_swarm import LocalSwarm
from plexus.server.verifier import RECEIPT_EVERY
from tests.e2e.helpers import start_servers, wait_for_servers

pytestmark = pytest.mark.slow


async def chat(boot: str, data_dir: Path) -> list[str]:
    async with AsyncClient.connect(
        "plexus-tiny", initial_peers=[boot], data_dir=data_dir
    ) as client:
        await wait_for_servers(client, 2)
        auditor = client.auditor
        conversation = client.chat()
        try:
            first = await conversation.send("hello", max_new_tokens=RECEIPT_EVERY + 4)
            await conversation.send("and then?", max_new_tokens=4)
        finally:
            await conversation.aclose()
    # Receipts are stored in the background; the client waits for them when it closes.
    assert auditor is not None and auditor.stats.receipts >= 3
    return [str(h["peer_id"]) for h in first.route]


def open_store(path: Path) -> LedgerStore:
    return LedgerStore(sqlite_url(path), create=False)


def test_chat_leaves_matching_receipts(local_swarm: LocalSwarm, tmp_path: Path) -> None:
    servers = start_servers(local_swarm, "plexus-tiny", ["0-3", "4-7"])
    client_dir = tmp_path / "client"
    route = trio.run(chat, local_swarm.initial_peers[0], client_dir)
    assert sorted(route) == sorted(s.peer_id for s in servers)
    client_key = None
    with open_store(client_dir / "ledger.sqlite") as mine:
        client_receipts = {r.receipt_id: r for r in mine.iter_receipts()}
        client_balances = mine.balances()
    assert len({r.receipt.server_key for r in client_receipts.values()}) == 2
    total = 0
    for server in servers:
        key = public_key_of(server.peer_id)
        with open_store(local_swarm.root / server.name / "ledger.sqlite") as theirs:
            stored = list(theirs.iter_receipts())
            balances = theirs.balances()
        own = [r for r in stored if r.receipt.server_key == key]
        assert own, f"{server.name} stored no receipt of its own"
        for receipt in stored:  # its own, and the other server's if gossip arrived already
            check_signatures(receipt)  # doubly signed
            assert client_receipts[receipt.receipt_id].encode() == receipt.encode()
        client_key = own[0].receipt.client_key
        # Mid-session receipts (every RECEIPT_EVERY steps) and the final one at close.
        assert max(r.receipt.seq for r in own) >= 2
        earned = balances[key].earned
        assert earned > 0 and client_balances[key].earned == earned
        held = {r.receipt.server_key for r in stored}
        assert balances[client_key].spent == sum(balances[k].earned for k in held)
        total += earned
    assert client_key is not None and client_balances[client_key].spent == total
