"""The client gossips only the newest receipt of each session, and only when the session
closes, when receipts have waited long enough, or when the client shuts down."""

from __future__ import annotations

from types import SimpleNamespace

import trio

from ledger.receipts import Receipt, decode_receipt, sign_as_server
from plexus.client import audit as audit_module
from plexus.client.audit import Auditor
from plexus.client.inference import HopState
from plexus.client.planner import Hop, ServerInfo
from plexus.identity import Identity
from plexus.verification import NETWORK_ID

MODEL = "test/model"


def make_hop(server: Identity, session: bytes) -> HopState:
    info = ServerInfo(server.peer_id_str, 0, 3, throughput=100.0)
    state = HopState(Hop(info, 0, 3), session_id=session.hex())
    state.audit.tokens_sent = 1000
    return state


def receipt_fields(server: Identity, client: Identity, session: bytes, seq: int) -> dict:
    receipt = Receipt(
        network_id=NETWORK_ID,
        model_id=MODEL,
        block_start=0,
        block_end=3,
        session_id=session,
        seq=seq,
        prompt_tokens=8,
        generated_tokens=seq,
        amount=100 * seq,
        inputs_hash=bytes(32),
        output_commitment=bytes(32),
        epoch=1_700_000_000,
        server_key=server.public_key_bytes,
        client_key=client.public_key_bytes,
    )
    signature = sign_as_server(receipt, server.signing_key)
    return {"receipt": receipt.encode().hex(), "receipt_sig": signature.hex()}


async def test_only_the_newest_receipt_per_session_is_gossiped_at_close() -> None:
    client, server = Identity.generate(), Identity.generate()
    published: list[tuple[str, bytes]] = []

    async def publish(kind: str, data: bytes) -> None:
        published.append((kind, data))

    swarm = SimpleNamespace(model_id=MODEL)
    auditor = Auditor(client, swarm, None, publish=publish)  # type: ignore[arg-type]
    one, two = make_hop(server, b"\x01" * 16), make_hop(server, b"\x02" * 16)
    for seq in (1, 2, 3):
        assert await auditor.take_receipt(one, receipt_fields(server, client, b"\x01" * 16, seq))
    assert await auditor.take_receipt(two, receipt_fields(server, client, b"\x02" * 16, 1))
    assert published == [] and auditor.stats.receipts == 4  # kept, not gossiped yet

    final = receipt_fields(server, client, b"\x01" * 16, 4)
    assert await auditor.take_receipt(one, final, final=True)
    assert [decode_receipt(d[:-128]).seq for _, d in published] == [4]
    assert decode_receipt(published[0][1][:-128]).session_id == b"\x01" * 16

    await auditor.flush_gossip(closing=True)  # the client shuts down: the rest goes now
    assert [(decode_receipt(d[:-128]).session_id, decode_receipt(d[:-128]).seq)
            for _, d in published[1:]] == [(b"\x02" * 16, 1)]  # fmt: skip
    assert await auditor.take_receipt(two, receipt_fields(server, client, b"\x02" * 16, 2))
    assert len(published) == 3  # after shutdown began, each receipt goes at once


async def test_receipts_waiting_too_long_go_out_with_the_next_one(monkeypatch) -> None:
    client, server = Identity.generate(), Identity.generate()
    published: list[bytes] = []

    async def publish(kind: str, data: bytes) -> None:
        published.append(data)

    monkeypatch.setattr(audit_module, "GOSSIP_DELAY_S", 0.05)
    auditor = Auditor(client, SimpleNamespace(model_id=MODEL), None, publish=publish)  # type: ignore[arg-type]
    hop = make_hop(server, b"\x03" * 16)
    await auditor.take_receipt(hop, receipt_fields(server, client, b"\x03" * 16, 1))
    assert published == []
    await trio.sleep(0.1)
    await auditor.take_receipt(hop, receipt_fields(server, client, b"\x03" * 16, 2))
    assert [decode_receipt(d[:-128]).seq for d in published] == [2]
