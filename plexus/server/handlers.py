"""Data-plane requests a block server answers (docs/protocol.md, "Block server").

Every field a peer sends is type- and range-checked here; anything wrong is answered
with a `ServerError` code, never an exception that reaches the connection.
"""

from __future__ import annotations

from typing import Any

import torch
import trio

from plexus import __version__
from plexus.p2p.dataplane import Message, Router
from plexus.server.backend import ServerSession, SpanBackend
from plexus.server.commitment_box import commitments_of
from plexus.server.errors import ServerCode, ServerError
from plexus.server.forwarding import Forwarder
from plexus.server.verifier import ServerVerifier


def _int(fields: dict[str, Any], name: str, low: int = 0, high: int = 2**31) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ServerError(
            ServerCode.MALFORMED_REQUEST, f"field {name!r} must be an int in [{low}, {high}]"
        )
    return value


def _str(fields: dict[str, Any], name: str, max_length: int = 256) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise ServerError(ServerCode.MALFORMED_REQUEST, f"field {name!r} must be a string")
    return value


def _flag(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if not isinstance(value, bool):
        raise ServerError(ServerCode.MALFORMED_REQUEST, f"field {name!r} must be a boolean")
    return value


def _check_length(session: ServerSession, expected: int) -> None:
    if expected != session.model.length:
        raise ServerError(
            ServerCode.MALFORMED_REQUEST,
            f"step expects the cache to hold {expected} tokens; it holds {session.model.length}",
        )


def _hidden_and_mask(message: Message) -> tuple[torch.Tensor, torch.Tensor | None]:
    tensors = message.tensors
    if len(tensors) not in (1, 2):
        raise ServerError(
            ServerCode.MALFORMED_REQUEST, "expected hidden states and an optional mask"
        )
    mask = None
    if len(tensors) == 2:
        mask = tensors[1]
        hidden = tensors[0]
        if mask.dtype not in (torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool):
            raise ServerError(ServerCode.MALFORMED_REQUEST, "mask must be an integer tensor")
        if mask.dim() != 2 or tuple(mask.shape) != tuple(hidden.shape[:2]):
            raise ServerError(ServerCode.MALFORMED_REQUEST, "mask must be [batch, tokens]")
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ServerError(ServerCode.MALFORMED_REQUEST, "mask values must be 0 or 1")
    return tensors[0], mask


class BlockServerHandlers:
    """Routes `info`, `open`, `step`, `push`, `rollback`, `close`, `forward` and `receipt`."""

    def __init__(
        self,
        backend: SpanBackend,
        model_id: str,
        info: dict[str, Any],
        verifier: ServerVerifier | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.backend = backend
        self.forwarder = forwarder  # server-to-server forwarding (docs/protocol.md, Part 5)
        self.background: trio.Nursery | None = None  # for work no reply waits for
        self.model_id = model_id
        self.info = info  # static facts: num_blocks, dtype, throughput, ...
        self.verifier = verifier  # commitments, receipts, injected faults (verification)
        self.router = Router()
        for name in (
            "info",
            "open",
            "step",
            "commitment",
            "push",
            "rollback",
            "close",
            "forward",
            "receipt",
        ):
            # `push` only hands the input to the step waiting for it (forwarding's
            # critical path): it runs in the connection's reader, as does a step that
            # will compute at once.
            inline = {"push": True, "step": self._step_runs_inline}.get(name, False)
            self.router.route(name, inline=inline)(getattr(self, f"on_{name}"))

    def _step_runs_inline(self, message: Message) -> bool:
        """A step whose handler waits for nothing: its input is in the message (not
        pushed), no new route grant needs its next hop dialled, and the backend would run
        it inline. The connection then runs it in its reader instead of starting a task
        (about 0.2 ms less on a 2-vCPU VM; docs/performance.md, "stop 19")."""
        f = message.fields
        tensors = message.tensors
        if f.get("upstream") or "route" in f or not tensors or tensors[0].dim() != 3:
            return False
        shape = tensors[0].shape
        return self.backend.would_run_inline(shape[0] * shape[1])

    def _check_model(self, fields: dict[str, Any]) -> None:
        if _str(fields, "model_id") != self.model_id:
            raise ServerError(
                ServerCode.WRONG_MODEL,
                f"this server serves {self.model_id}, not {fields['model_id']}",
            )

    async def on_info(self, peer_id: str, message: Message) -> Message:
        b = self.backend
        return Message(
            "info",
            {
                **self.info,
                "model_id": self.model_id,
                "start": b.span.start,
                "end": b.span.end,
                "version": __version__,
                "sessions": len(b.sessions),
                "max_sessions": b.max_sessions,
                "free_cache_tokens": b.free_cache_tokens,
                "steps": b.steps,
                "batched_steps": b.batched_steps,
            },
        )

    async def on_open(self, peer_id: str, message: Message) -> Message:
        f = message.fields
        self._check_model(f)
        start, end = _int(f, "start"), _int(f, "end")
        session = self.backend.open_session(
            peer_id,
            start,
            end,
            _int(f, "max_length", 1, 1_000_000),
            _int(f, "batch_size", 1, 1024) if "batch_size" in f else 1,
        )
        if self.verifier is not None:
            self.verifier.forget_missing(set(self.backend.sessions))
            self.verifier.opened(session, start, end)
        return Message("open", {"session_id": session.id})

    async def on_step(self, peer_id: str, message: Message) -> Message:
        f = message.fields
        session = self.backend.get(peer_id, _str(f, "session_id", 64))
        expected = _int(f, "length", 0, 1_000_000)
        forwarder = self.forwarder
        if forwarder is not None:
            forwarder.supersede(session)
            if "route" in f:
                forwarder.accept_grant(session, f)
        _check_length(session, expected)
        upstream = _flag(f, "upstream")
        if upstream and (forwarder is None or message.tensors):
            raise ServerError(
                ServerCode.MALFORMED_REQUEST,
                "an upstream step carries no tensors, on a server that forwards",
            )
        split = _flag(f, "split") and self.verifier is not None
        box = commitments_of(session)
        await box.settled()  # the previous step's commitment first: inputs hash in order
        previous = box.collect(expected) if _flag(f, "previous") else None
        hidden, mask = (None, None) if upstream else _hidden_and_mask(message)
        if self.verifier is not None and "client_sig" in f:
            await self.verifier.countersigned(peer_id, session.id, f, self.background)
        if upstream:
            assert forwarder is not None
            wait_s = _int(f, "wait_ms", 1, 600_000) / 1000
            hidden, mask = await forwarder.wait_input(session, expected, wait_s)
            _check_length(session, expected)
        assert hidden is not None
        # Pushed input went through check_hidden in on_push.
        out = await self.backend.step(session, hidden, mask, checked=upstream)
        fields: dict[str, Any] = {"length": session.model.length}
        if previous is not None:  # the last split step's commitment rides on this reply
            fields["previous"] = previous
        if self.verifier is not None:
            out = await self.verifier.apply_fault(hidden, out)
        if _flag(f, "forward"):
            # Output first (it is what the next server waits for), commitment after.
            pushed = forwarder is not None and await forwarder.push(session, expected, out, mask)
            fields["forwarded"] = pushed
        if split:  # the reply goes now; the commitment follows (`previous`, `commitment`)
            assert self.verifier is not None
            verifier, length = self.verifier, session.model.length
            box.post(length, lambda: verifier.commit_step(session, expected, hidden, mask, out))
            if self.background is not None:
                self.background.start_soon(box.compute)
            else:
                await box.compute()
            fields["commitment_follows"] = True
        elif self.verifier is not None:
            fields.update(self.verifier.commit_step(session, expected, hidden, mask, out))
        return Message("step", fields, [out])

    async def on_commitment(self, peer_id: str, message: Message) -> Message:
        """The commitment (and receipt, when due) of a `split` step, once computed."""
        f = message.fields
        session = self.backend.get(peer_id, _str(f, "session_id", 64))
        length = _int(f, "length", 1, 1_000_000)
        wait_s = _int(f, "wait_ms", 1, 600_000) / 1000 if "wait_ms" in f else 60.0
        fields = await commitments_of(session).get(length, wait_s)
        return Message("commitment", fields)

    async def on_push(self, peer_id: str, message: Message) -> Message:
        """Input for a session's next step, from the hop before it (or its owner)."""
        f = message.fields
        session_id = _str(f, "session_id", 64)
        session = self.backend.sessions.get(session_id)
        if (
            session is None
            or self.forwarder is None
            or not self.forwarder.may_push(session, peer_id)
        ):
            raise ServerError(ServerCode.UNKNOWN_SESSION, f"no session {session_id!r}")
        length = _int(f, "length", 0, 1_000_000)
        _check_length(session, length)
        hidden, mask = _hidden_and_mask(message)
        self.backend.check_hidden(hidden, session.batch_size)
        self.forwarder.deliver(session, length, hidden, mask)
        return Message("push", {})

    async def on_rollback(self, peer_id: str, message: Message) -> Message:
        f = message.fields
        session = self.backend.get(peer_id, _str(f, "session_id", 64))
        if self.forwarder is not None:
            self.forwarder.supersede(session)
        box = commitments_of(session)
        await box.settled()
        box.reset()
        length = _int(f, "length", 0, session.model.length)
        await self.backend.rollback(session, length)
        if self.verifier is not None:
            self.verifier.rolled_back(session)
        return Message("rollback", {"length": session.model.length})

    async def on_close(self, peer_id: str, message: Message) -> Message:
        session_id = _str(message.fields, "session_id", 64)
        if session_id in self.backend.sessions:
            session = self.backend.get(peer_id, session_id)
            if self.forwarder is not None:
                self.forwarder.supersede(session)
            await commitments_of(session).settled()  # the final receipt counts every step
        self.backend.close_session(peer_id, session_id)
        fields: dict[str, Any] = {}
        if self.verifier is not None:
            fields = self.verifier.close_reply(session_id)
            self.verifier.closed(session_id)
        return Message("close", fields)

    async def on_receipt(self, peer_id: str, message: Message) -> Message:
        """The client's countersignature of a receipt sent with a close reply."""
        if self.verifier is None:
            raise ServerError(ServerCode.MALFORMED_REQUEST, "this server issues no receipts")
        f = message.fields
        # Stored at the server's next quiet moment (receipt_writer): the reply does not wait.
        session_id = _str(f, "session_id", 64)
        stored = await self.verifier.countersigned(peer_id, session_id, f, self.background)
        return Message("receipt", {"stored": stored})

    async def on_forward(self, peer_id: str, message: Message) -> Message:
        f = message.fields
        self._check_model(f)
        hidden, mask = _hidden_and_mask(message)
        start, end = _int(f, "start"), _int(f, "end")
        if self.verifier is None:
            out = await self.backend.forward(start, end, hidden, mask, peer_id)
            return Message("forward", {}, [out])
        self.backend.blocks_for(start, end)  # SPAN_MISMATCH before anything else
        tokens = hidden.shape[1] if hidden.dim() == 3 else 1
        commit_from = _int(f, "commit_from", 0, max(0, tokens - 1)) if "commit_from" in f else 0
        last = self.verifier.forward_end(start, end)
        out = await self.backend.forward(start, last, hidden, mask, peer_id)
        out, fields = await self.verifier.forward_reply(start, end, hidden, mask, out, commit_from)
        return Message("forward", fields, [out])
