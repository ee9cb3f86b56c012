"""A block server's commitments, receipts and hostile-input answers, in process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import trio

from ledger import LedgerStore, countersign
from ledger.engine import sqlite_url
from ledger.fraud import commitment_message
from ledger.receipts import decode_receipt
from ledger.signing import verify
from plexus.identity import Identity
from plexus.models import SpanSession, load_span
from plexus.p2p.dataplane import Message
from plexus.server.backend import SpanBackend
from plexus.server.errors import ServerCode, ServerError
from plexus.server.handlers import BlockServerHandlers
from plexus.server.verifier import RECEIPT_EVERY, ServerVerifier
from plexus.verification import NETWORK_ID
from plexus.verification.commitments import Commitment, inputs_hash, tensor_hash
from plexus.verification.compare import FULL_TOLERANCE, step_errors
from plexus.verification.faults import Fault


@pytest.fixture
def span(model_dirs: dict[str, Path]):  # type: ignore[no-untyped-def]
    return load_span(model_dirs["tiny"], 0, 3, progress=False)


def make(span, tmp_path: Path, fault: Fault | None = None):  # type: ignore[no-untyped-def]
    server = Identity.generate(os.urandom(32))
    store = LedgerStore(sqlite_url(tmp_path / "server.sqlite"), NETWORK_ID)
    verifier = ServerVerifier(server, "m", params_per_block=1000, fault=fault, ledger=store)
    backend = SpanBackend(span)
    return server, store, BlockServerHandlers(backend, "m", {}, verifier)


def test_commitments_and_receipts(span, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, store, handlers = make(span, tmp_path)
    client = Identity.generate(os.urandom(32))
    me = client.peer_id_str

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handlers.backend.run)
            opened = await handlers.on_open(
                me, Message("open", {"model_id": "m", "start": 0, "end": 3, "max_length": 64})
            )
            sid = opened.fields["session_id"]
            xs = [torch.randn(1, 3, 128)] + [torch.randn(1, 1, 128) for _ in range(RECEIPT_EVERY)]
            length, back, receipts = 0, {}, 0
            for i, x in enumerate(xs):
                if back:  # a forged countersignature is refused, the real one stored
                    forged = {"session_id": sid, "length": length, **back, "client_sig": "00" * 64}
                    with pytest.raises(ServerError) as refused:
                        await handlers.on_step(me, Message("step", forged, [x]))
                    assert refused.value.server_code == ServerCode.MALFORMED_REQUEST
                fields = {"session_id": sid, "length": length, **back}
                reply = await handlers.on_step(me, Message("step", fields, [x]))
                length += x.shape[1]
                blob = bytes.fromhex(reply.fields["commitment"])
                digest = inputs_hash(torch.cat(xs[: i + 1], dim=1), None)
                assert reply.fields["inputs_hash"] == digest.hex()
                message = commitment_message(NETWORK_ID, digest, blob)
                signature = bytes.fromhex(reply.fields["commitment_sig"])
                assert verify(server.public_key_bytes, "commitment/v1", message, signature)
                assert Commitment.decode(blob).output_hash == tensor_hash(reply.tensors[0])
                back = {}
                if "receipt" in reply.fields:
                    receipt = decode_receipt(bytes.fromhex(reply.fields["receipt"]))
                    sig = bytes.fromhex(reply.fields["receipt_sig"])
                    signed = countersign(receipt, sig, client.signing_key)
                    back = {"receipt_seq": receipt.seq, "client_sig": signed.client_signature.hex()}
                    receipts += 1
            assert receipts == 1
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert store.counts()["receipts"] == 1


def test_hostile_fields_and_noise(span, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, handlers = make(span, tmp_path, Fault("noise"))
    me = Identity.generate(os.urandom(32)).peer_id_str
    x = torch.randn(1, 4, 128)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handlers.backend.run)
            base = {"model_id": "m", "start": 0, "end": 3}
            for bad in ({"commit_from": 4}, {"commit_from": -1}, {"commit_from": "0"}):
                with pytest.raises(ServerError):
                    await handlers.on_forward(me, Message("forward", {**base, **bad}, [x]))
            with pytest.raises(ServerError):
                await handlers.on_receipt(
                    me,
                    Message("receipt", {"session_id": "ab", "receipt_seq": 1, "client_sig": "0"}),
                )
            reply = await handlers.on_forward(
                me, Message("forward", {**base, "commit_from": 2}, [x])
            )
            honest = await handlers.backend.forward(0, 3, x, None)
            assert not torch.allclose(reply.tensors[0], honest)  # noisy, and committed to
            c = Commitment.decode(bytes.fromhex(reply.fields["commitment"]))
            assert c.output_hash == tensor_hash(reply.tensors[0]) and c.position == 2
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_inputs_hash_follows_rollbacks(span, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """After a rollback (at a step boundary or inside a chunk) the next commitment names
    the hash of exactly the kept prefix plus the new tokens, as a client computes it."""
    _, _, handlers = make(span, tmp_path)
    me = Identity.generate(os.urandom(32)).peer_id_str
    x = torch.randn(1, 8, 128)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handlers.backend.run)
            opened = await handlers.on_open(
                me, Message("open", {"model_id": "m", "start": 0, "end": 3, "max_length": 64})
            )
            sid = opened.fields["session_id"]

            async def step(a: int, b: int) -> str:
                fields = {"session_id": sid, "length": a}
                reply = await handlers.on_step(me, Message("step", fields, [x[:, a:b]]))
                return reply.fields["inputs_hash"]

            await step(0, 4)
            await step(4, 5)
            for keep in (4, 2):  # a step boundary, then inside the first chunk
                await handlers.on_rollback(
                    me, Message("rollback", {"session_id": sid, "length": keep})
                )
                assert await step(keep, keep + 2) == inputs_hash(x[:, : keep + 2], None).hex()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_skip_fault_drops_a_block_and_is_caught(span, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, handlers = make(span, tmp_path, Fault("skip"))
    me = Identity.generate(os.urandom(32)).peer_id_str
    x = torch.randn(1, 5, 128)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handlers.backend.run)
            opened = await handlers.on_open(
                me, Message("open", {"model_id": "m", "start": 0, "end": 3, "max_length": 64})
            )
            session = handlers.backend.sessions[opened.fields["session_id"]]
            assert len(session.model.blocks) == 3  # of 4
            fields = {"session_id": session.id, "length": 0}
            reply = await handlers.on_step(me, Message("step", fields, [x]))
            honest = SpanSession(span).step(x)
            assert step_errors(reply.tensors[0] - x, honest - x, None) > FULL_TOLERANCE
            nursery.cancel_scope.cancel()

    trio.run(main)
