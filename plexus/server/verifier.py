"""A block server's side of verification and accounting.

* every step and forward reply carries a commitment signed by the server
  (plexus.verification.commitments), computed on what the server really returns;
* receipts (ledger.receipts) ride on step replies every `receipt_every` steps and on the
  close reply; the client sends its countersignature back on its next step request (or a
  `receipt` request after close) and the server stores the doubly signed receipt;
* `--inject-fault` (plexus.verification.faults) misbehaves here, before committing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import trio

from ledger import LedgerStore, Receipt, sign_as_server
from ledger.errors import InvalidReceipt, LedgerError
from ledger.fraud import sign_commitment
from ledger.receipts import SignedReceipt, check_signatures
from ledger.units import block_scale_milli, expected_amount
from plexus.identity import Identity, public_key_of
from plexus.models.session import SpanSession
from plexus.receipt_writer import ReceiptWriter
from plexus.server.backend import ServerSession
from plexus.server.errors import ServerCode, ServerError
from plexus.verification import NETWORK_ID
from plexus.verification.commitments import (
    InputsHasher,
    Kind,
    inputs_hash,
    make_commitment,
)
from plexus.verification.faults import Fault

log = logging.getLogger(__name__)

RECEIPT_EVERY = 16
"""Steps between receipts piggybacked on step replies."""
MAX_PENDING_RECEIPTS = 4
ZERO_SESSION = bytes(16)


@dataclass
class _Book:
    """What the verifier remembers of one session."""

    client_key: bytes
    start: int
    end: int
    hasher: InputsHasher | None = None
    snapshots: dict[int, InputsHasher] = field(default_factory=dict)  # length -> hasher
    steps: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seq: int = 0
    last_commitment: bytes = bytes(32)
    pending: dict[int, Receipt] = field(default_factory=dict)  # seq -> awaiting countersign
    since_receipt: int = 0


def _hex(fields: dict[str, Any], name: str, size: int) -> bytes:
    value = fields.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise ServerError(
            ServerCode.MALFORMED_REQUEST, f"field {name!r} must be {size} bytes of hex"
        )
    return raw


class ServerVerifier:
    """Commitments, receipts and injected faults for one block server."""

    def __init__(
        self,
        identity: Identity,
        model_id: str,
        *,
        params_per_block: int,
        network_id: str = NETWORK_ID,
        fault: Fault | None = None,
        ledger: LedgerStore | None = None,
        receipt_every: int = RECEIPT_EVERY,
    ) -> None:
        self.identity = identity
        self.model_id = model_id
        self.network_id = network_id
        self.fault = fault
        self.ledger = ledger
        self.receipt_every = max(1, receipt_every)
        self.scale_milli = block_scale_milli(max(1, params_per_block))
        self._books: dict[str, _Book] = {}
        self._closing: dict[str, _Book] = {}  # closed sessions awaiting a countersignature
        self._ledger_limiter = trio.CapacityLimiter(1)
        # Set by the runner: receipts then wait for a moment the server is not computing.
        self.writer: ReceiptWriter | None = None
        self.receipts_stored = 0
        self.receipts_refused = 0

    # -- sessions -------------------------------------------------------------------------
    def opened(self, session: ServerSession, start: int, end: int) -> None:
        if self.fault is not None and self.fault.skips() and len(session.model.blocks) > 1:
            blocks = session.model.blocks
            session.model = SpanSession(session.model.span, range(blocks.start, blocks.stop - 1))
        try:
            client_key = public_key_of(session.owner)
        except ValueError:
            client_key = bytes(32)
        self._books[session.id] = _Book(client_key, start, end)

    def closed(self, session_id: str) -> None:
        self._books.pop(session_id, None)

    def forget_missing(self, live: set[str]) -> None:
        for sid in [s for s in self._books if s not in live]:
            del self._books[sid]

    def _book(self, session: ServerSession) -> _Book:
        book = self._books.get(session.id)
        if book is None:  # a session opened before the verifier knew it
            book = _Book(bytes(32), session.model.span.start, session.model.span.end)
            self._books[session.id] = book
        return book

    def rolled_back(self, session: ServerSession) -> None:
        """Restore the inputs hash for the new length (exact at step boundaries)."""
        book = self._book(session)
        length = session.model.length
        snapshot = book.snapshots.get(length)
        if snapshot is not None:
            book.hasher = snapshot.copy()
        else:
            history = session.model.history()
            book.hasher = None
            if history is not None:
                hidden, mask = history
                book.hasher = InputsHasher(hidden.shape[0], hidden.shape[2])
                book.hasher.update(hidden, mask)
        book.snapshots = {n: h for n, h in book.snapshots.items() if n <= length}

    # -- replies --------------------------------------------------------------------------
    def _sign(self, digest: bytes, blob: bytes) -> dict[str, Any]:
        signed = sign_commitment(self.identity.signing_key, self.network_id, digest, blob)
        return {
            "inputs_hash": digest.hex(),
            "commitment": blob.hex(),
            "commitment_sig": signed.signature.hex(),
        }

    async def step_reply(
        self,
        session: ServerSession,
        position: int,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        out: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The output to send (a fault may change it) and the fields to add to the reply."""
        out = await self.apply_fault(hidden, out)
        return out, self.commit_step(session, position, hidden, mask, out)

    async def apply_fault(self, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """What a server with an injected fault returns instead of `out` (testing only)."""
        if self.fault is None:
            return out
        await self.fault.before_reply()
        return self.fault.corrupt(hidden, out)

    def commit_step(
        self,
        session: ServerSession,
        position: int,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        out: torch.Tensor,
    ) -> dict[str, Any]:
        """The commitment (and maybe a receipt) for a step that returned `out`."""
        book = self._book(session)
        if book.hasher is None or position == 0:
            book.hasher = InputsHasher(hidden.shape[0], hidden.shape[2])
            book.snapshots = {0: book.hasher.copy()}
        digest = book.hasher.update(hidden, mask)
        book.snapshots[position + hidden.shape[1]] = book.hasher.copy()
        book.steps += 1
        commitment = make_commitment(
            kind=Kind.STEP,
            model_id=self.model_id,
            block_start=book.start,
            block_end=book.end,
            session_id=bytes.fromhex(session.id),
            step=book.steps,
            inputs_digest=digest,
            hidden=hidden,
            output=out,
            mask=mask,
            position=position,
        ).encode()
        fields = self._sign(digest, commitment)
        fields["step"] = book.steps
        tokens = hidden.shape[0] * hidden.shape[1]
        if book.steps == 1 or hidden.shape[1] > 1:
            book.prompt_tokens += tokens
        else:
            book.generated_tokens += tokens
        book.last_commitment = _sha256(commitment)
        book.since_receipt += 1
        if book.since_receipt >= self.receipt_every:
            fields.update(self._issue(session.id, book, digest))
        return fields

    async def forward_reply(
        self,
        start: int,
        end: int,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        out: torch.Tensor,
        commit_from: int,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.fault is not None:
            await self.fault.before_reply()
            out = self.fault.corrupt(hidden, out)
        digest = await trio.to_thread.run_sync(lambda: inputs_hash(hidden, mask))
        commitment = make_commitment(
            kind=Kind.FORWARD,
            model_id=self.model_id,
            block_start=start,
            block_end=end,
            session_id=ZERO_SESSION,
            step=0,
            inputs_digest=digest,
            hidden=hidden,
            output=out,
            mask=mask,
            position=0,
            sketch_from=commit_from,
        ).encode()
        return out, self._sign(digest, commitment)

    def forward_end(self, start: int, end: int) -> int:
        """The last block a forward really runs (a `skip` fault drops one)."""
        if self.fault is not None and end > start and self.fault.skips():
            return end - 1
        return end

    # -- receipts -------------------------------------------------------------------------
    def _issue(self, session_id: str, book: _Book, digest: bytes | None = None) -> dict[str, Any]:
        book.since_receipt = 0
        if book.prompt_tokens + book.generated_tokens == 0:
            return {}
        book.seq += 1
        receipt = Receipt(
            network_id=self.network_id,
            model_id=self.model_id,
            block_start=book.start,
            block_end=book.end,
            session_id=bytes.fromhex(session_id),
            seq=book.seq,
            prompt_tokens=book.prompt_tokens,
            generated_tokens=book.generated_tokens,
            amount=expected_amount(
                book.prompt_tokens + book.generated_tokens, book.start, book.end, self.scale_milli
            ),
            inputs_hash=digest if digest is not None else (book.hasher or _EMPTY).digest(),
            output_commitment=book.last_commitment,
            epoch=int(time.time()),
            server_key=self.identity.public_key_bytes,
            client_key=book.client_key,
        )
        book.pending[book.seq] = receipt
        while len(book.pending) > MAX_PENDING_RECEIPTS:
            book.pending.pop(min(book.pending))
        signature = sign_as_server(receipt, self.identity.signing_key)
        return {"receipt": receipt.encode().hex(), "receipt_sig": signature.hex()}

    def close_reply(self, session_id: str) -> dict[str, Any]:
        """The final receipt of a closing session (its book stays until countersigned)."""
        book = self._books.get(session_id)
        if book is None:
            return {}
        fields = self._issue(session_id, book)
        if fields:
            self._closing[session_id] = book
            while len(self._closing) > 1024:
                self._closing.pop(next(iter(self._closing)))
        return fields

    async def countersigned(
        self,
        peer_id: str,
        session_id: str,
        fields: dict[str, Any],
        background: trio.Nursery | None = None,
    ) -> bool:
        """Store the receipt the client countersigned (fields receipt_seq, client_sig).
        With `background`, the signatures are checked now and the durable write runs in
        a task of that nursery (a step need not wait for the disk); returns whether the
        receipt is (or is being) stored."""
        if "client_sig" not in fields:
            return False
        book = self._books.get(session_id) or self._closing.get(session_id)
        seq = fields.get("receipt_seq")
        if book is None or not isinstance(seq, int) or seq not in book.pending:
            raise ServerError(ServerCode.MALFORMED_REQUEST, "no receipt awaits that countersign")
        receipt = book.pending[seq]
        try:
            if public_key_of(peer_id) != receipt.client_key:
                raise ServerError(ServerCode.MALFORMED_REQUEST, "receipt is not yours to sign")
        except ValueError:
            raise ServerError(ServerCode.MALFORMED_REQUEST, "peer has no Ed25519 key") from None
        signed = SignedReceipt(
            receipt,
            sign_as_server(receipt, self.identity.signing_key),
            _hex(fields, "client_sig", 64),
        )
        try:
            check_signatures(signed)
        except InvalidReceipt as exc:
            self.receipts_refused += 1
            raise ServerError(ServerCode.MALFORMED_REQUEST, f"receipt refused: {exc}") from None
        del book.pending[seq]
        if session_id in self._closing and not book.pending:
            del self._closing[session_id]
        if self.ledger is None:
            return False
        if background is not None:
            background.start_soon(self._store, signed)
            return True
        return await self._store(signed)

    async def _store(self, signed: SignedReceipt) -> bool:
        assert self.ledger is not None
        ledger = self.ledger
        try:
            if self.writer is not None:
                await self.writer.store_receipt(signed)
            else:
                with trio.CancelScope(shield=True):  # a started write always finishes
                    await trio.to_thread.run_sync(
                        ledger.add_receipt, signed, limiter=self._ledger_limiter
                    )
        except LedgerError as exc:
            self.receipts_refused += 1
            log.warning("could not store a receipt: %s", exc)
            return False
        self.receipts_stored += 1
        return True


_EMPTY = InputsHasher(1, 1)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
