"""The client's side of verification and accounting (docs/verification.md).

* **Checking replies.** Every step reply must carry a commitment signed by its server, to
  the inputs the client sent (the client keeps the same running inputs hash) and to the
  exact output tensor received. A missing or wrong commitment is a failed server.
* **Audits.** When a request ends (after every server has committed), the client decides
  per hop, with fresh OS randomness and `audit_probability` for that server's record,
  whether to audit it. An audit sends the hop's whole input as one ordinary stateless
  `forward` to a *different* server holding those blocks, and compares the updates of the
  steps not yet audited (`compare.FULL_TOLERANCE`). The audited server sees nothing.
* **Disputes.** On a mismatch a third server arbitrates. The party that disagrees with the
  other two gets a fraud proof (its commitment against the two others' for the same
  inputs), checked with `proofs.check_fraud_proof`, stored in the client's ledger and
  handed to the gossip layer; it is blocked and its reputation set to zero. A failed hop
  makes `InferenceSession.audit` return False: the caller recomputes on other servers.
* **Receipts.** Receipts piggybacked on step and close replies are checked, countersigned,
  stored in the client's ledger and the countersignature sent back on the next request.
  Receipts are cumulative, so only the newest of each session is gossiped: when the
  session closes, when a receipt arrives `GOSSIP_DELAY_S` after the oldest one waiting, or
  when the client shuts down (`flush_gossip`). Gossip during generation would cost every
  peer's CPU (pubsub signatures, a ledger write each) for nothing the last receipt lacks.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import trio

from ledger import LedgerStore
from ledger.audits import Audit, Outcome, sign_audit
from ledger.errors import InvalidReceipt, LedgerError
from ledger.fraud import SignedCommitment, SignedFraudProof, commitment_message
from ledger.receipts import SignedReceipt, countersign, decode_receipt
from ledger.signing import verify as verify_signature
from plexus.errors import NetworkError
from plexus.identity import Identity, peer_id_of, public_key_of
from plexus.models.finite import all_finite
from plexus.p2p.dataplane import Message
from plexus.receipt_writer import Activity, ReceiptWriter
from plexus.verification import NETWORK_ID
from plexus.verification.commitments import (
    Commitment,
    CommitmentError,
    InputsHasher,
    Kind,
    model_tag,
    tensor_hash,
)
from plexus.verification.compare import FULL_TOLERANCE, step_errors
from plexus.verification.policy import RECENTLY_CAUGHT_S, TRUST_AFTER, audit_probability
from plexus.verification.proofs import build_fraud_proof, check_fraud_proof

if TYPE_CHECKING:
    from plexus.client.inference import HopState
    from plexus.client.swarm import SwarmView

log = logging.getLogger(__name__)

AUDIT_TIMEOUT_S = 60.0
COMMITMENT_TAG = "commitment/v1"
CAUGHT_REPUTATION = 0.25  # planner reputation of a server that recently failed an audit
MAX_PROOF_ATTEMPTS = 3
MAX_AUDITORS_TRIED = 2  # other servers asked in turn when an auditor does not answer
GOSSIP_DELAY_S = 10.0  # longest a session's newest receipt waits before it is gossiped


@dataclass
class StepRecord:
    """One committed step of one hop, as the client received it."""

    position: int
    tokens: int
    inputs_hash: bytes
    signed: SignedCommitment
    commitment: Commitment


@dataclass
class Prechecked:
    """The inputs hash of a step not yet answered, computed while the client waits
    (`Auditor.precheck`), with the running hasher it continued and the one it gives."""

    hidden: torch.Tensor
    mask: torch.Tensor
    base: InputsHasher | None
    hasher: InputsHasher
    digest: bytes


@dataclass
class PendingStep:
    """A step whose output the client took before its commitment came: a split step,
    whose commitment rides on the hop's next step reply (`previous`) or is fetched with
    a `commitment` request before the session audits, rolls back or closes."""

    position: int
    tokens: int
    inputs_hash: bytes
    out: torch.Tensor  # as received (the commitment's output hash is over these bytes)
    as_float: torch.Tensor  # what the client used (kept for the audits)
    signed: SignedCommitment | None = None  # once checked
    commitment: Commitment | None = None

    @property
    def end(self) -> int:
        return self.position + self.tokens


@dataclass
class HopAudit:
    """Per-hop verification state (kept on `HopState.audit`)."""

    hasher: InputsHasher | None = None
    prechecked: Prechecked | None = None
    records: list[StepRecord] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    audited: int = 0  # positions before this were audited (or skipped) already
    countersign: dict[str, Any] = field(default_factory=dict)  # piggyback on next request
    tokens_sent: int = 0
    due: bool | None = None  # whether the next audit_hop audits (drawn once, in advance)
    pending: PendingStep | None = None  # the last step, while its commitment is to come


@dataclass
class AuditStats:
    audits: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0  # decided not to audit
    unavailable: int = 0  # no other server holds the blocks
    convictions: int = 0
    audit_tokens: int = 0  # tokens re-run by auditors and arbiters
    served_tokens: int = 0  # tokens the audited hops served
    receipts: int = 0
    unproven: int = 0  # outputs a failed server never committed to, compared with the replay
    unproven_wrong: int = 0  # of those, outputs the replay disagreed with


class HeldOutput:
    """Streamed text that, once `hold()` is true, is kept until the request's audits have
    passed (`release`) or failed (`discard`): text from a step that fails an audit is never
    shown. Clients hold as soon as some server on the route is to be audited on this
    request (`Auditor.must_hold`; asked again before every piece, as a failover may bring
    in a new server). `on_token` is a low-level progress hook and is never held (it sees
    tokens as they are generated)."""

    def __init__(
        self,
        on_text: Callable[[str], object] | None,
        on_token: Callable[[int], object] | None,
        hold: Callable[[], bool],
    ) -> None:
        self._hold = hold
        self.holding = False
        self._text = on_text
        self._pieces: list[str] = []
        self.on_text = None if on_text is None else self._piece
        self.on_token = on_token

    def _piece(self, text: str) -> None:
        assert self._text is not None
        if not self.holding:
            self.holding = self._hold()
        if self.holding:
            self._pieces.append(text)
        else:
            self._text(text)

    def release(self) -> None:
        pieces, self._pieces = self._pieces, []
        if self._text is not None:
            for text in pieces:
                self._text(text)

    def discard(self) -> None:
        self._pieces = []


@dataclass
class _Party:
    peer_id: str
    out: torch.Tensor  # [B, L, H] over the whole input
    signed: SignedCommitment
    inputs_hash: bytes


class Auditor:
    """One client's audits, trust records, ledger and receipts."""

    def __init__(
        self,
        identity: Identity,
        swarm: SwarmView,
        ledger: LedgerStore | None = None,
        *,
        network_id: str = NETWORK_ID,
        floor: float = 0.02,
        publish: Callable[[str, bytes], Awaitable[None]] | None = None,
        background: trio.Nursery | None = None,
        writer: ReceiptWriter | None = None,
    ) -> None:
        self.identity = identity
        self.swarm = swarm
        self.ledger = ledger
        self.network_id = network_id
        self.floor = floor
        self.publish = publish  # (topic kind, bytes) -> gossip, when a gossip layer runs
        self.background = background  # stores and gossips receipts off the critical path
        # Sessions' steps mark it busy; `writer` (if any) stores receipts when it is quiet.
        self.activity = writer.activity if writer is not None else Activity()
        self.writer = writer
        self.clean: dict[str, int] = {}
        self.caught_at: dict[str, float] = {}
        self.convicted: set[str] = set()
        self.proofs: list[SignedFraudProof] = []
        self.stats = AuditStats()
        self._rng = secrets.SystemRandom()
        self._ledger_limiter = trio.CapacityLimiter(1)
        self._unsent: dict[tuple[bytes, bytes, bytes], SignedReceipt] = {}  # newest per session
        self._unsent_since: float | None = None  # when the oldest unsent receipt was kept
        self._gossip_at_once = False  # the client is shutting down
        if ledger is not None:
            self._load_reputation(ledger)

    def _load_reputation(self, ledger: LedgerStore) -> None:
        """Start from what this client's ledger remembers (its own audits, any proofs)."""
        book = ledger.reputation_book(trusted_auditors=[self.identity.public_key_bytes])
        for key in book.servers():
            try:
                peer = peer_id_of(key)
            except ValueError:
                continue
            rep = book.reputation(key)
            if rep.banned:
                self._block(peer)
            else:
                self.clean[peer] = rep.consecutive_valid

    # -- policy ---------------------------------------------------------------------------
    def recently_caught(self, peer_id: str) -> bool:
        at = self.caught_at.get(peer_id)
        return at is not None and time.monotonic() - at < RECENTLY_CAUGHT_S

    def probability(self, peer_id: str) -> float:
        return audit_probability(
            self.clean.get(peer_id, 0), self.recently_caught(peer_id), floor=self.floor
        )

    def audit_due(self, state: HopState) -> bool:
        """Whether the hop's next `audit_hop` audits it: drawn with the server's audit
        probability once, before the request's output streams, so that text which an
        audit could still reject is never shown (the server cannot tell either way)."""
        audit = state.audit
        if audit.due is None:
            audit.due = self._rng.random() < self.probability(state.hop.peer_id)
        return audit.due

    def must_hold(self, hops: list[HopState]) -> bool:
        """Whether streamed output must wait for the audits: a server on the route is to
        be audited on this request (new and recently caught servers always are)."""
        return any([self.audit_due(state) for state in hops])

    def _block(self, peer_id: str) -> None:
        self.convicted.add(peer_id)
        self.swarm.blocked.add(peer_id)
        self.swarm.reputation[peer_id] = 0.0

    def _passed(self, peer_id: str) -> None:
        self.clean[peer_id] = self.clean.get(peer_id, 0) + 1
        if self.clean[peer_id] >= TRUST_AFTER:
            self.caught_at.pop(peer_id, None)
            self.swarm.reputation.pop(peer_id, None)

    def _failed(self, peer_id: str) -> None:
        self.clean[peer_id] = 0
        self.caught_at[peer_id] = time.monotonic()
        if peer_id not in self.convicted:
            self.swarm.reputation[peer_id] = CAUGHT_REPUTATION

    # -- checking every reply -------------------------------------------------------------
    def check_step(
        self,
        state: HopState,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        reply: Message,
        out: torch.Tensor,
        as_float: torch.Tensor | None = None,
    ) -> None:
        """Verify a step reply's commitment; raises NetworkError when it is wrong (and
        then changes nothing)."""
        pre = self.precheck(state, hidden, mask)
        as_float = as_float if as_float is not None else out.float()
        step = PendingStep(state.length, hidden.shape[1], pre.digest, out, as_float)
        self._check_commitment(state, step, reply.fields)
        if not all_finite(out):
            raise NetworkError(f"{state.hop.peer_id} returned non-finite hidden states")
        self._advance(state, pre)
        self._keep_record(state, step)

    def take_output(
        self,
        state: HopState,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        out: torch.Tensor,
        as_float: torch.Tensor,
    ) -> PendingStep:
        """A split step's reply, whose commitment is still to come: checks what it can
        (finite values), moves the hop's running inputs hash on, and returns what
        `check_commitment` will check the commitment against."""
        if not all_finite(out):
            raise NetworkError(f"{state.hop.peer_id} returned non-finite hidden states")
        pre = self.precheck(state, hidden, mask)
        self._advance(state, pre)
        return PendingStep(state.length, hidden.shape[1], pre.digest, out, as_float)

    def _advance(self, state: HopState, pre: Prechecked) -> None:
        audit = state.audit
        audit.hasher, audit.prechecked = pre.hasher, None  # the session's from now on
        audit.tokens_sent += pre.hidden.shape[0] * pre.hidden.shape[1]

    def check_commitment(self, state: HopState, step: PendingStep, fields: dict[str, Any]) -> None:
        """Check a taken step's commitment (`fields` of a `commitment` reply or of a step
        reply's `previous`); keep it for the audits."""
        self._check_commitment(state, step, fields)
        self._keep_record(state, step)

    def compare_lost(
        self,
        state: HopState,
        step: PendingStep,
        inputs: torch.Tensor,
        mask: torch.Tensor,
        replayed: torch.Tensor,
    ) -> None:
        """A failed hop's last output, whose commitment never came, against what its
        replacement computed for the same positions while replaying (`inputs`, `mask`,
        `replayed`: the whole history's). No fraud proof can be made without the commitment, but a
        server that answers wrongly and then fails does not go unnoticed."""
        span = slice(step.position, step.end)
        x = inputs[:, span].float()
        error = step_errors(step.as_float - x, replayed[:, span].float() - x, mask[:, span])
        self.stats.unproven += 1
        if error > FULL_TOLERANCE:
            self.stats.unproven_wrong += 1
            peer = state.hop.peer_id
            log.warning(
                "%s's last output before it failed disagrees with its replacement's "
                "(relative error %.3g); it counts as caught", peer, error,
            )  # fmt: skip
            self._failed(peer)

    def _keep_record(self, state: HopState, step: PendingStep) -> None:
        assert step.commitment is not None
        audit = state.audit
        audit.records.append(
            StepRecord(step.position, step.tokens, step.inputs_hash, step.signed, step.commitment)
        )
        audit.outputs.append(step.as_float)

    def _check_commitment(self, state: HopState, step: PendingStep, fields: dict[str, Any]) -> None:
        peer = state.hop.peer_id
        signed, commitment = self._read_commitment(fields, peer, step.inputs_hash)
        if (
            commitment.kind != Kind.STEP
            or commitment.model != model_tag(self.swarm.model_id)
            or (commitment.block_start, commitment.block_end) != (state.hop.start, state.hop.end)
            or commitment.position != step.position
            or commitment.tokens != step.tokens
            or commitment.output_hash != tensor_hash(step.out)
        ):
            raise NetworkError(f"{peer} committed to something else than it returned")
        step.signed, step.commitment = signed, commitment

    def precheck(self, state: HopState, hidden: torch.Tensor, mask: torch.Tensor) -> Prechecked:
        """The inputs hash `check_step` will need for a step on `hidden`. The client
        computes it while it waits anyway (a hop's input arrives while the hop before it
        is still answering, and the client's core is idle during that hop's compute);
        `check_step` reuses it for the same tensors and state, else computes it then."""
        audit = state.audit
        base = None if state.length == 0 else audit.hasher
        pre = audit.prechecked
        if pre is None or pre.hidden is not hidden or pre.mask is not mask or pre.base is not base:
            hasher = InputsHasher(hidden.shape[0], hidden.shape[2]) if base is None else base.copy()
            pre = audit.prechecked = Prechecked(
                hidden, mask, base, hasher, hasher.update(hidden, mask)
            )
        return pre

    def _read_commitment(
        self, fields: dict[str, Any], peer: str, digest: bytes
    ) -> tuple[SignedCommitment, Commitment]:
        try:
            blob = bytes.fromhex(fields["commitment"])
            signature = bytes.fromhex(fields["commitment_sig"])
            claimed = bytes.fromhex(fields["inputs_hash"])
            commitment = Commitment.decode(blob)
        except (KeyError, TypeError, ValueError, CommitmentError) as exc:
            raise NetworkError(f"{peer} sent no valid commitment: {exc}") from None
        if claimed != digest:
            raise NetworkError(f"{peer} committed to other inputs than were sent")
        key = public_key_of(peer)
        message = commitment_message(self.network_id, digest, blob)
        if not verify_signature(key, COMMITMENT_TAG, message, signature):
            raise NetworkError(f"{peer}'s commitment signature does not verify")
        return SignedCommitment(key, blob, signature), commitment

    def rolled_back(self, state: HopState, length: int) -> None:
        audit = state.audit
        kept = [
            (r, o)
            for r, o in zip(audit.records, audit.outputs, strict=True)
            if r.position + r.tokens <= length
        ]
        audit.records = [r for r, _ in kept]
        audit.outputs = [o for _, o in kept]
        audit.audited = min(audit.audited, length)
        audit.hasher, audit.prechecked = None, None
        if length:
            x, m = state.history()
            audit.hasher = InputsHasher(x.shape[0], x.shape[2])
            audit.hasher.update(x[:, :length], m[:, :length])

    # -- receipts -------------------------------------------------------------------------
    async def take_receipt(
        self, state: HopState, fields: dict[str, Any], final: bool = False
    ) -> dict[str, Any]:
        """Countersign and store a piggybacked receipt; returns the fields to send back.
        `final`: the session's last receipt (from its close reply): gossip it now."""
        if "receipt" not in fields:
            return {}
        peer = state.hop.peer_id
        try:
            receipt = decode_receipt(bytes.fromhex(fields["receipt"]))
            server_signature = bytes.fromhex(fields["receipt_sig"])
        except (KeyError, TypeError, ValueError, InvalidReceipt) as exc:
            log.warning("%s sent a malformed receipt: %s", peer, exc)
            return {}
        expected = (
            receipt.network_id == self.network_id
            and receipt.model_id == self.swarm.model_id
            and receipt.server_key == public_key_of(peer)
            and receipt.client_key == self.identity.public_key_bytes
            and receipt.session_id.hex() == state.session_id
            and (receipt.block_start, receipt.block_end) == (state.hop.start, state.hop.end)
            and receipt.tokens <= state.audit.tokens_sent
        )
        if not expected:
            log.warning("%s sent a receipt that does not match the session; not signed", peer)
            return {}
        try:
            signed = countersign(receipt, server_signature, self.identity.signing_key)
        except InvalidReceipt as exc:
            log.warning("%s sent a receipt with a bad signature: %s", peer, exc)
            return {}
        if self.background is not None:  # the next step need not wait for the disk
            self.background.start_soon(self._keep, peer, signed, final, self.writer)
        elif not await self._keep(peer, signed, final):
            return {}
        return {"receipt_seq": receipt.seq, "client_sig": signed.client_signature.hex()}

    async def _keep(
        self,
        peer: str,
        signed: SignedReceipt,
        final: bool = False,
        writer: ReceiptWriter | None = None,
    ) -> bool:
        """Store a countersigned receipt in this client's ledger; gossip it in due course.
        With `writer`, the receipt is stored at the client's next quiet moment (only for a
        task that no step waits for)."""
        if self.ledger is not None:
            ledger = self.ledger
            try:
                if writer is not None:  # at the next quiet moment (receipt_writer)
                    await writer.store_receipt(signed)
                else:
                    with trio.CancelScope(shield=True):  # a started write always finishes
                        await trio.to_thread.run_sync(
                            ledger.add_receipt, signed, limiter=self._ledger_limiter
                        )
            except LedgerError as exc:
                log.warning("could not store %s's receipt: %s", peer, exc)
                return False
        self.stats.receipts += 1
        if self.publish is not None:
            stream = signed.receipt.stream
            older = self._unsent.get(stream)
            if older is None or older.receipt.seq < signed.receipt.seq:
                self._unsent[stream] = signed
            now = time.monotonic()
            if self._unsent_since is None:
                self._unsent_since = now
            if final or self._gossip_at_once:
                await self._gossip(stream)
            since = self._unsent_since
            if since is not None and now - since >= GOSSIP_DELAY_S:
                await self.flush_gossip()
        return True

    async def flush_gossip(self, closing: bool = False) -> None:
        """Gossip every receipt still waiting (the newest of each session); `closing`:
        from now on gossip each receipt as soon as it is stored."""
        self._gossip_at_once = self._gossip_at_once or closing
        self._unsent_since = None
        for stream in list(self._unsent):
            await self._gossip(stream)

    async def _gossip(self, stream: tuple[bytes, bytes, bytes]) -> None:
        signed = self._unsent.pop(stream, None)
        if not self._unsent:
            self._unsent_since = None
        if signed is not None and self.publish is not None:
            await self.publish("receipt", signed.encode())

    # -- audits ---------------------------------------------------------------------------
    async def audit_hop(self, state: HopState) -> bool:
        """Audit (maybe) the hop's steps not audited yet; False if it failed."""
        audit = state.audit
        peer = state.hop.peer_id
        length = state.length
        if not audit.records or audit.audited >= length or peer in self.convicted:
            return peer not in self.convicted
        first = audit.audited
        audit.audited = length
        due, audit.due = self.audit_due(state), None  # the next request draws again
        if not due:
            self.stats.skipped += 1
            return True
        x, m = state.history()
        steps = [
            (r, o) for r, o in zip(audit.records, audit.outputs, strict=True) if r.position >= first
        ]
        if not steps:
            return True
        records = [r for r, _ in steps]
        auditor, tried = None, {peer}
        while auditor is None and len(tried) <= MAX_AUDITORS_TRIED:
            auditor_id = self._pick(state, tried)
            if auditor_id is None:
                break
            tried.add(auditor_id)
            auditor = await self._forward(auditor_id, state, x, m, first)
        if auditor is None:
            self.stats.unavailable += 1
            log.info("no other server could audit blocks %d-%d", *_span(state))
            return True
        auditor_id = auditor.peer_id
        self.stats.audits += 1
        self.stats.served_tokens += sum(r.tokens for r in records) * x.shape[0]
        bad = self._mismatched(steps, auditor.out, x, m)
        if not bad:
            self.stats.passed += 1
            await self._record(state, peer, Outcome.PASS, records[-1].inputs_hash)
            return True
        log.warning(
            "audit of %s (blocks %d-%d) by %s: %d of %d steps disagree; arbitrating",
            peer, *_span(state), auditor_id, len(bad), len(records),
        )  # fmt: skip
        arbiter_id = self._pick(state, {peer, auditor_id})
        arbiter = None
        if arbiter_id is not None:
            arbiter = await self._forward(arbiter_id, state, x, m, first)
        if arbiter is None:
            self.stats.failed += 1
            self._failed(peer)
            self._failed(auditor_id)
            await self._record(state, peer, Outcome.FAIL, records[-1].inputs_hash)
            return False
        with_original = not self._mismatched(steps, arbiter.out, x, m)
        with_auditor = not self._disagree(arbiter.out, auditor.out, x, m, first)
        if with_auditor and not with_original:
            self.stats.failed += 1
            await self._record(state, peer, Outcome.FAIL, records[-1].inputs_hash)
            self._failed(peer)
            await self._convict_server(state, records, bad, auditor, arbiter, x, m)
            return False
        if with_original and not with_auditor:
            self.stats.passed += 1
            await self._record(state, peer, Outcome.PASS, records[-1].inputs_hash)
            await self._convict_auditor(state, auditor, arbiter, records[-1])
            return True
        self.stats.failed += 1
        self._failed(peer)
        await self._record(state, peer, Outcome.FAIL, records[-1].inputs_hash)
        return False

    def _pick(self, state: HopState, exclude: set[str]) -> str | None:
        """A random other server holding all the hop's blocks, not backed off."""
        avoid = exclude | self.convicted | self.swarm.backed_off()
        candidates = sorted(
            s.peer_id
            for s in self.swarm.servers.values()
            if s.start <= state.hop.start and s.end >= state.hop.end and s.peer_id not in avoid
        )
        return self._rng.choice(candidates) if candidates else None

    def _mismatched(
        self,
        steps: list[tuple[StepRecord, torch.Tensor]],
        reference: torch.Tensor,
        x: torch.Tensor,
        m: torch.Tensor,
    ) -> list[StepRecord]:
        """The steps whose update differs from the reference's beyond the tolerance."""
        bad = []
        for r, out in steps:
            a, b = r.position, r.position + r.tokens
            mine, theirs = out - x[:, a:b], reference[:, a:b] - x[:, a:b]
            if step_errors(mine, theirs, m[:, a:b]) > FULL_TOLERANCE:
                bad.append(r)
        return bad

    @staticmethod
    def _disagree(
        a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, m: torch.Tensor, first: int
    ) -> bool:
        da, db = a[:, first:] - x[:, first:], b[:, first:] - x[:, first:]
        return step_errors(da, db, m[:, first:]) > FULL_TOLERANCE

    async def _forward(
        self,
        peer: str,
        state: HopState,
        x: torch.Tensor,
        m: torch.Tensor,
        commit_from: int,
    ) -> _Party | None:
        """An ordinary stateless forward of the hop's input on `peer`, checked."""
        server = self.swarm.servers.get(peer)
        if server is None:
            return None
        digest = InputsHasher(x.shape[0], x.shape[2]).update(x, m)
        tensors = [x] if bool(m.all()) else [x, m]
        fields = {
            "model_id": self.swarm.model_id,
            "start": state.hop.start,
            "end": state.hop.end,
            "commit_from": commit_from,
        }
        try:
            with trio.fail_after(AUDIT_TIMEOUT_S):
                conn = await self.swarm.pool.get(peer, server.address)
                reply = await conn.request(
                    Message("forward", fields, tensors), timeout=AUDIT_TIMEOUT_S
                )
            raw = reply.tensors[0] if len(reply.tensors) == 1 else None
            if raw is None or tuple(raw.shape) != tuple(x.shape):
                raise NetworkError("malformed forward output")
            signed, commitment = self._read_commitment(reply.fields, peer, digest)
            if commitment.output_hash != tensor_hash(raw) or commitment.position != commit_from:
                raise NetworkError("forward commitment does not match its output")
        except (NetworkError, trio.TooSlowError) as exc:
            log.warning("audit forward on %s failed: %s", peer, exc)
            self.swarm.fail(peer)
            return None
        self.stats.audit_tokens += x.shape[0] * x.shape[1]
        return _Party(peer, raw.float(), signed, digest)

    async def _record(
        self, state: HopState, peer: str, outcome: Outcome, inputs_hash: bytes
    ) -> None:
        if outcome is Outcome.PASS:
            self._passed(peer)
        if self.ledger is None:
            return
        audit = Audit(
            network_id=self.network_id,
            model_id=self.swarm.model_id,
            block_start=state.hop.start,
            block_end=state.hop.end,
            session_id=bytes.fromhex(state.session_id) if state.session_id else bytes(16),
            inputs_hash=inputs_hash,
            outcome=outcome,
            epoch=int(time.time()),
            server_key=public_key_of(peer),
            auditor_key=self.identity.public_key_bytes,
        )
        signed = sign_audit(audit, self.identity.signing_key)
        ledger = self.ledger
        try:
            await trio.to_thread.run_sync(ledger.add_audit, signed, limiter=self._ledger_limiter)
        except LedgerError as exc:
            log.warning("could not store an audit: %s", exc)

    async def _convict_server(
        self,
        state: HopState,
        records: list[StepRecord],
        bad: list[StepRecord],
        auditor: _Party,
        arbiter: _Party,
        x: torch.Tensor,
        m: torch.Tensor,
    ) -> None:
        """Fraud proof against the audited server, from its worst step(s)."""
        peer = state.hop.peer_id
        length = x.shape[1]
        for record in sorted(bad, key=lambda r: -r.tokens)[:MAX_PROOF_ATTEMPTS]:
            end = record.position + record.tokens
            if end == length:
                witnesses = [auditor.signed, arbiter.signed]
            else:  # commitments to exactly the prefix this step committed to
                xs, ms = x[:, :end], m[:, :end]
                a = await self._forward(auditor.peer_id, state, xs, ms, record.position)
                b = await self._forward(arbiter.peer_id, state, xs, ms, record.position)
                if a is None or b is None:
                    continue
                witnesses = [a.signed, b.signed]
            if await self._prove(state, peer, record.inputs_hash, record.signed, witnesses):
                return
        log.warning("%s failed an audit but no proof passed the checker", peer)

    async def _convict_auditor(
        self, state: HopState, auditor: _Party, arbiter: _Party, last: StepRecord
    ) -> None:
        witnesses = [arbiter.signed]
        if last.inputs_hash == auditor.inputs_hash:
            witnesses.append(last.signed)
        await self._prove(state, auditor.peer_id, auditor.inputs_hash, auditor.signed, witnesses)
        self._failed(auditor.peer_id)

    async def _prove(
        self,
        state: HopState,
        accused: str,
        inputs_hash: bytes,
        accused_commitment: SignedCommitment,
        witnesses: list[SignedCommitment],
    ) -> bool:
        proof = build_fraud_proof(
            self.identity.signing_key,
            network_id=self.network_id,
            model_id=self.swarm.model_id,
            block_start=state.hop.start,
            block_end=state.hop.end,
            inputs_hash=inputs_hash,
            accused=accused_commitment,
            witnesses=witnesses,
        )
        if not check_fraud_proof(proof.proof):
            return False
        if self.ledger is not None:
            ledger = self.ledger
            try:
                await trio.to_thread.run_sync(
                    lambda: ledger.add_fraud_proof(proof, check_fraud_proof),
                    limiter=self._ledger_limiter,
                )
            except LedgerError as exc:
                log.warning("could not store a fraud proof: %s", exc)
                return False
        self.proofs.append(proof)
        self.stats.convictions += 1
        self._block(accused)
        log.warning("convicted %s of returning wrong results; fraud proof stored", accused)
        if self.publish is not None:
            await self.publish("fraud", proof.encode())
        return True


def _span(state: HopState) -> tuple[int, int]:
    return state.hop.start, state.hop.end
