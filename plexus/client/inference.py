"""A client's inference session through a chain of servers, surviving their failures.

With forwarding (the default) the client sends a step's hidden states to the first server
only; each server pushes its output straight to the next one (docs/protocol.md, Part 5),
and every server still answers the client with its output, commitment and receipt, so
the client checks each hop as it would had it relayed the states itself. A server that
cannot reach the next one says so, and the client relays that leg.

Every hop remembers what it was sent. When a server fails (it crashed, timed out, or
answered with an error), the client backs off from it, plans that hop's blocks onto
other servers, replays the hop's whole input history to rebuild their caches, and
carries on: the output is the same as if nothing had failed.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
import trio

from plexus.client.audit import Auditor, HopAudit, PendingStep
from plexus.client.planner import Hop, MissingBlocksError, Route, plan_route
from plexus.client.swarm import SwarmView
from plexus.errors import NetworkError, PlexusError
from plexus.models.finite import all_finite
from plexus.p2p.dataplane import Message
from plexus.p2p.dataplane.connection import PendingReply
from plexus.p2p.dataplane.errors import RemoteError, RequestTimeout
from plexus.p2p.route_grant import GrantHop, RouteGrant, SignedGrant, sign_grant
from plexus.server.errors import ServerCode
from plexus.verification import NETWORK_ID

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_STEP_TIMEOUT_S = 60.0  # before any step time was measured
MIN_STEP_TIMEOUT_S = 3.0
TIMEOUT_FACTOR = 20.0  # a step may take this many times its expected duration
MAX_RECOVERY_ATTEMPTS = 6
# After this many forwarded inputs came too late (a slow link, or a server that says it
# forwarded and did not), the session stops forwarding: each one cost a step's wait.
MAX_LATE_INPUTS = 3
CLOSE_TIMEOUT_S = 5.0
LOOKUP_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


class RouteError(PlexusError):
    """No working chain of servers could be found for the session."""


@dataclass
class HopState:
    hop: Hop
    session_id: str = ""
    length: int = 0  # tokens in the server's cache
    inputs: list[torch.Tensor] = field(default_factory=list)
    masks: list[torch.Tensor] = field(default_factory=list)
    seconds_per_token: float | None = None  # moving average of measured steps
    audit: HopAudit = field(default_factory=HopAudit)  # commitments, outputs, receipts
    grant_seq: int = -1  # the route grant this hop's server holds

    def timeout(self, tokens: int) -> float:
        """How long a step of `tokens` may take: a multiple of the measured time per
        token, or before any measurement of the server's announced throughput."""
        rate = self.seconds_per_token
        if rate is None:
            blocks = self.hop.end - self.hop.start + 1
            throughput = self.hop.server.throughput
            if not throughput > 0:
                return FIRST_STEP_TIMEOUT_S
            rate = blocks / throughput
        return max(MIN_STEP_TIMEOUT_S, TIMEOUT_FACTOR * rate * tokens)

    def observe(self, seconds: float, tokens: int) -> None:
        rate = seconds / max(tokens, 1)
        old = self.seconds_per_token
        self.seconds_per_token = rate if old is None else 0.8 * old + 0.2 * rate

    def history(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(self.inputs, dim=1), torch.cat(self.masks, dim=1)


class InferenceSession:
    """Hidden states in, hidden states out, through whichever servers are alive."""

    def __init__(
        self,
        swarm: SwarmView,
        num_blocks: int,
        hidden_size: int,
        max_length: int,
        batch_size: int = 1,
        auditor: Auditor | None = None,
        forwarding: bool = True,
    ) -> None:
        self.swarm = swarm
        self.auditor = auditor
        self.forwarding = forwarding  # servers push hidden states to the next server
        self.network_id = auditor.network_id if auditor is not None else NETWORK_ID
        self._grant: SignedGrant | None = None
        self._grant_seq = 0
        self.forwarded_legs = 0  # server-to-server legs taken
        self.relayed_legs = 0  # legs the client relayed
        self.late_inputs = 0  # forwarded steps whose pushed input came too late
        self._while_waiting: Callable[[], object] | None = None  # see step_and
        self._while_waiting_s = 0.0  # what it took, last time
        self.num_blocks = num_blocks
        self.hidden_size = hidden_size
        self.max_length = max_length
        self.batch_size = batch_size
        self.hops: list[HopState] = []
        self.failovers = 0

    @property
    def route(self) -> list[dict[str, object]]:
        return [
            {
                "peer_id": h.hop.peer_id,
                "start": h.hop.start,
                "end": h.hop.end,
                "address": h.hop.server.address,
            }
            for h in self.hops
        ]

    @property
    def length(self) -> int:
        return self.hops[0].length if self.hops else 0

    async def open(self) -> None:
        await self.swarm.refresh()
        # DHT lookups can miss servers (a lookup racing an announcement, peers churning):
        # look again a few times before declaring blocks missing.
        for delay in LOOKUP_RETRY_DELAYS_S:
            try:
                self.hops = await self._open_route(0, self.num_blocks - 1)
                return
            except MissingBlocksError as exc:
                log.info("%s; looking again in %.1f s", exc, delay)
                await trio.sleep(delay)
                await self.swarm.refresh(force=True)
        self.hops = await self._open_route(0, self.num_blocks - 1)

    async def step(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run `hidden` [B, T, H] through every block; `mask` [B, T] marks padding."""
        out, _ = await self.step_and(hidden, None, mask)
        return out

    async def step_and(
        self,
        hidden: torch.Tensor,
        then: Callable[[torch.Tensor], T] | None,
        mask: torch.Tensor | None = None,
        while_waiting: Callable[[], object] | None = None,
    ) -> tuple[torch.Tensor, T | None]:
        """`step`, and `then(output)` (say, the next token's logits). With verification,
        the last server answers with its output before computing its commitment, which
        comes with its next reply (checked first; `settle` collects it before audits,
        rollbacks and closing). `while_waiting()` (say, pulling the LM head into the
        CPU's cache) runs once, while the client waits for the last server, if that wait
        is expected to last at least twice as long as it does."""
        if self.auditor is None:
            return await self._step_and(hidden, then, mask, while_waiting)
        with self.auditor.activity:  # the client's receipts wait until it is quiet
            return await self._step_and(hidden, then, mask, while_waiting)

    async def _step_and(
        self,
        hidden: torch.Tensor,
        then: Callable[[torch.Tensor], T] | None,
        mask: torch.Tensor | None,
        while_waiting: Callable[[], object] | None,
    ) -> tuple[torch.Tensor, T | None]:
        if not self.hops:
            await self.open()
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long)
        self._while_waiting = while_waiting
        index, resync = 0, False
        if self.forwarding and len(self.hops) > 1:
            hidden, index = await self._forwarded_step(hidden, mask)
            resync = True  # later hops may have run this step already, or still wait
        while index < len(self.hops):
            state = self.hops[index]
            last = index == len(self.hops) - 1
            try:
                if resync and index > 0:
                    await self._resync(state)
                out = await self._send_step(state, hidden, mask, split=last)
            except NetworkError as exc:
                self._report_failure(state, exc)
                replacement, out = await self._recover(state, hidden, mask)
                self.hops[index : index + 1] = replacement
                index += len(replacement)
            else:
                index += 1
            hidden = out
        return hidden, None if then is None else then(hidden)

    def _report_failure(self, state: HopState, exc: Exception) -> None:
        log.warning(
            "server %s failed (%s); re-routing blocks %d-%d",
            state.hop.peer_id,
            exc,
            state.hop.start,
            state.hop.end,
        )
        self.failovers += 1

    # -- forwarding -----------------------------------------------------------------------
    def _current_grant(self) -> SignedGrant:
        """The signed route of the current hops (a new one whenever the route changed)."""
        hops = tuple(
            GrantHop(s.hop.peer_id, s.session_id, s.hop.start, s.hop.end, s.hop.server.address)
            for s in self.hops
        )
        if self._grant is None or self._grant.grant.hops != hops:
            self._grant_seq += 1
            identity = self.swarm.pool.identity
            grant = RouteGrant(
                self.network_id, self.swarm.model_id, identity.peer_id_str, self._grant_seq, hops
            )
            self._grant = sign_grant(grant, identity)
        return self._grant

    async def _forwarded_step(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """One step with servers forwarding to each other. Returns the last output the
        client checked and the index of the first hop that has not produced it (the
        number of hops when all did); the caller relays and recovers from there."""
        hops = list(self.hops)
        grant = self._current_grant()
        tokens = hidden.shape[1]
        tensors = [hidden] if bool(mask.all()) else [hidden, mask]
        sent = [_Sent() for _ in hops]
        deadlines: list[float] = []
        started = trio.current_time()
        budget = 0.0
        messages = []
        for k, state in enumerate(hops):
            fields: dict[str, object] = {"session_id": state.session_id, "length": state.length}
            fields.update(state.audit.countersign)
            state.audit.countersign = {}
            if state.audit.pending is not None:
                fields["previous"] = True  # its last step's commitment, with this reply
            if state.grant_seq != grant.grant.seq:
                fields.update(grant.fields())
            if k + 1 < len(hops):
                fields["forward"] = True
            if k > 0:
                fields["upstream"] = True
                fields["wait_ms"] = min(600_000, max(1, int(1000 * budget)))
            if k + 1 == len(hops) and self.auditor is not None:
                fields["split"] = sent[k].split = True  # the commitment: with the next reply
            budget += state.timeout(tokens)
            deadlines.append(started + budget)
            messages.append(Message("step", fields, tensors if k == 0 else []))
        pool = self.swarm.pool
        dialling = not all(pool.connected(state.hop.peer_id) for state in hops[1:])
        # No nursery in the common case (every later hop connected): none is needed.
        async with trio.open_nursery() if dialling else contextlib.nullcontext() as nursery:
            # The later hops' requests go first: they only make their servers wait for
            # the pushed input, and sent after the first request they would take CPU from
            # the first server's compute wherever the two share cores (docs/performance.md).
            # One that must dial first is sent from a task.
            for k in range(1, len(hops)):
                if nursery is None or pool.connected(hops[k].hop.peer_id):
                    await self._send(hops[k], messages[k], sent[k], tokens)
                else:
                    nursery.start_soon(self._send, hops[k], messages[k], sent[k], tokens)
            await self._send(hops[0], messages[0], sent[0], tokens)
            x, index, previous = hidden, 0, started
            failure: NetworkError | None = None
            try:
                for k, state in enumerate(hops):
                    if k + 1 == len(hops):
                        self._idle_while(state, sent[k], previous, tokens)
                    x = await self._receive(state, x, mask, sent[k], deadlines[k], previous)
                    state.grant_seq = grant.grant.seq
                    previous, index = trio.current_time(), k + 1
                    if index < len(hops):
                        if sent[k].fields.get("forwarded") is True:
                            self.forwarded_legs += 1
                        else:  # the server could not reach the next one: relay that leg
                            self.relayed_legs += 1
                            await self._push(hops[index], x, mask)
                        if self.auditor is not None:  # while the next server computes
                            self.auditor.precheck(hops[index], x, mask)
            except NetworkError as exc:
                if index > 0 and _input_came_too_late(exc):
                    self._input_was_late(hops[index])  # the caller relays from there
                else:
                    failure = exc
            if nursery is not None:
                nursery.cancel_scope.cancel()  # requests still out are answered to nobody
        if failure is not None:
            self._report_failure(hops[index], failure)
            replacement, x = await self._recover(hops[index], x, mask)
            self.hops[index : index + 1] = replacement
            index += len(replacement)
        return x, index

    def _input_was_late(self, state: HopState) -> None:
        """`state`'s server answered that its forwarded input did not come in time: it is
        alive, so it is relayed this step instead of failed, and every hop gets the route
        grant again with the next step (the later ones took the current one already)."""
        log.info("%s got no input in time; relaying", state.hop.peer_id)
        self.relayed_legs += 1
        self._grant = None
        self.late_inputs += 1
        if self.late_inputs >= MAX_LATE_INPUTS:  # each one cost a wait
            log.warning("forwarded inputs keep coming late: relaying from now on")
            self.forwarding = False

    async def _send(self, state: HopState, message: Message, into: _Sent, tokens: int) -> None:
        try:
            conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
            into.set(await conn.send_request(message))
        except NetworkError as exc:
            into.fail(exc)

    async def _push(self, state: HopState, hidden: torch.Tensor, mask: torch.Tensor) -> None:
        """Hand a hop waiting for upstream input its input (the relay fallback)."""
        tensors = [hidden] if bool(mask.all()) else [hidden, mask]
        conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
        fields = {"session_id": state.session_id, "length": state.length}
        await conn.send(Message("push", fields, tensors))

    async def _resync(self, state: HopState) -> None:
        """After a failed forwarded step a later hop may have run it already: make its
        cache hold exactly what this client knows it holds (a no-op if it does)."""
        try:  # a rollback drops the server's pending commitment
            await self._settle(state)
        except NetworkError as exc:  # it may have run this step already: the commitment is gone
            log.info("%s's last commitment is lost: %s", state.hop.peer_id, exc)
        conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
        message = Message("rollback", {"session_id": state.session_id, "length": state.length})
        await conn.request(message, timeout=state.timeout(state.length + 1) + MIN_STEP_TIMEOUT_S)

    async def rollback(self, length: int) -> None:
        """Forget everything after the first `length` tokens, on every hop."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back to {length}: session holds {self.length}")
        await self.settle()  # a rollback drops the servers' pending commitments
        for state in self.hops:
            if state.length == length:
                continue
            x, m = state.history()
            state.inputs, state.masks = [x[:, :length]], [m[:, :length]]
            if self.auditor is not None:
                self.auditor.rolled_back(state, length)
            try:
                conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
                await conn.request(
                    Message("rollback", {"session_id": state.session_id, "length": length}),
                    timeout=state.timeout(length) + MIN_STEP_TIMEOUT_S,
                )
                state.length = length
            except NetworkError as exc:
                # The next step on this hop fails over and replays the truncated history.
                log.warning("rollback on %s failed: %s", state.hop.peer_id, exc)
                state.length = length
                state.session_id = ""
            if length == 0:
                state.inputs, state.masks = [], []

    async def close(self) -> None:
        """Tell the servers to free their caches (best effort, bounded)."""
        # Bounded, with room for the final receipt's exchange (two durable writes).
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for state in self.hops:
                    nursery.start_soon(self._close_one, state)
        self.hops = []

    async def audit(self) -> bool:
        """Audit (each hop with its server's audit probability) the steps not audited
        yet; False if a hop failed: its results must not be used (recompute them)."""
        if self.auditor is None:
            return True
        # The last step's commitment, so that it can be audited too; fetched whether or
        # not the hop is audited, or the request would tell its server that it is.
        await self.settle()
        ok = True
        for state in self.hops:
            ok = await self.auditor.audit_hop(state) and ok
        return ok

    async def settle(self) -> None:
        """Collect and check the commitments still to come (split steps' that no later
        step brought). A hop whose server does not deliver is reported failed: its next
        step fails over."""
        for state in self.hops:
            try:
                await self._settle(state)
            except NetworkError as exc:
                log.warning("%s did not deliver its last commitment: %s", state.hop.peer_id, exc)
                self.swarm.fail(state.hop.peer_id)

    async def _settle(self, state: HopState) -> None:
        pending, state.audit.pending = state.audit.pending, None
        if pending is None or self.auditor is None:
            return
        conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
        fields = {"session_id": state.session_id, "length": pending.end}
        fields["wait_ms"] = min(600_000, max(1, int(1000 * state.timeout(pending.tokens))))
        timeout = state.timeout(pending.tokens) + MIN_STEP_TIMEOUT_S
        reply = await conn.request(Message("commitment", fields), timeout=timeout)
        await self._check_pending(state, pending, reply.fields)

    async def _check_pending(
        self, state: HopState, pending: PendingStep, fields: dict[str, Any]
    ) -> None:
        assert self.auditor is not None
        self.auditor.check_commitment(state, pending, fields)
        back = await self.auditor.take_receipt(state, fields)
        if back:
            state.audit.countersign = back

    async def _close_one(self, state: HopState) -> None:
        try:
            await self._settle(state)  # the final receipt then counts every checked step
            conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
            reply = await conn.request(
                Message("close", {"session_id": state.session_id}), timeout=2.0
            )
            if self.auditor is not None:
                back = await self.auditor.take_receipt(state, reply.fields, final=True)
                if back:
                    message = Message("receipt", {"session_id": state.session_id, **back})
                    await conn.request(message, timeout=CLOSE_TIMEOUT_S)
        except NetworkError:
            pass

    # -- internals -----------------------------------------------------------------------
    async def _open_route(self, start: int, end: int) -> list[HopState]:
        failed_here: set[str] = set()  # servers that could not open a session, this call
        for _attempt in range(MAX_RECOVERY_ATTEMPTS):
            try:
                route = self._plan(start, end, self.swarm.backed_off())
            except MissingBlocksError as exc:
                # Every server left for some blocks failed recently. A live server backs
                # off after one timeout too (a loaded machine, a slow link): rather than
                # give up, try those again, each once here. Convicted ones never are.
                route = self._plan(start, end, self.swarm.blocked | failed_here)
                log.info("%s (but for servers that failed recently): trying those again", exc)
            states = [HopState(hop) for hop in route.hops]
            try:
                async with trio.open_nursery() as nursery:
                    for state in states:
                        nursery.start_soon(self._open_one, state)
                return states
            except* NetworkError as group:
                for state in states:
                    if not state.session_id:
                        self.swarm.fail(state.hop.peer_id)
                        failed_here.add(state.hop.peer_id)
                log.warning("could not open sessions: %s", group.exceptions[0])
                await self.swarm.refresh(force=True)
        raise RouteError(f"no working servers for blocks {start}-{end}")

    def _plan(self, start: int, end: int, exclude: set[str]) -> Route:
        # Comparable servers share the load (and new ones get traffic to be audited).
        servers = [replace(s, reputation=s.reputation * random.uniform(0.5, 1.0))
                   for s in self.swarm.servers.values()]  # fmt: skip
        return plan_route(
            self.num_blocks,
            servers,
            start=start,
            end=end,
            rtts=self.swarm.rtts,
            exclude=exclude,
            cache_tokens_needed=self.max_length * self.batch_size,
            forwarding=self.forwarding,
        )

    async def _open_one(self, state: HopState) -> None:
        conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
        reply = await conn.request(
            Message(
                "open",
                {
                    "model_id": self.swarm.model_id,
                    "start": state.hop.start,
                    "end": state.hop.end,
                    "max_length": self.max_length,
                    "batch_size": self.batch_size,
                },
            ),
            timeout=10.0,
        )
        session_id = reply.fields.get("session_id")
        if not isinstance(session_id, str):
            raise NetworkError(f"{state.hop.peer_id} answered open without a session id")
        state.session_id = session_id

    async def _send_step(
        self, state: HopState, hidden: torch.Tensor, mask: torch.Tensor, split: bool = False
    ) -> torch.Tensor:
        """A relayed step on one hop; `split`: the commitment may follow the reply."""
        conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
        tokens = hidden.shape[1]
        tensors = [hidden] if bool(mask.all()) else [hidden, mask]
        started = trio.current_time()
        fields: dict[str, object] = {"session_id": state.session_id, "length": state.length}
        fields.update(state.audit.countersign)
        state.audit.countersign = {}
        if state.audit.pending is not None:
            fields["previous"] = True  # its last step's commitment, with this reply
        deadline = started + state.timeout(tokens)
        sent = _Sent()
        if split and self.auditor is not None:
            fields["split"] = sent.split = True
        sent.set(await conn.send_request(Message("step", fields, tensors)))
        if split:
            self._idle_while(state, sent, started, tokens)
        return await self._receive(state, hidden, mask, sent, deadline, started)

    def _idle_while(self, state: HopState, sent: _Sent, since: float, tokens: int) -> None:
        """Run this step's `while_waiting` if the last hop's reply is not expected
        before it would be done."""
        work, self._while_waiting = self._while_waiting, None
        if work is None or sent.arrived:
            return
        if state.seconds_per_token is not None:
            left = since + state.seconds_per_token * tokens - trio.current_time()
            if left < 2 * self._while_waiting_s:
                return
        began = time.perf_counter()
        work()
        self._while_waiting_s = time.perf_counter() - began

    async def _receive(
        self,
        state: HopState,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        sent: _Sent,
        deadline: float,
        since: float,
    ) -> torch.Tensor:
        """A hop's reply to a step on `hidden`, checked."""
        reply = await sent.reply(deadline)
        seconds = trio.current_time() - since
        return await self._accept(state, hidden, mask, reply, seconds, sent.split)

    async def _accept(
        self,
        state: HopState,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        reply: Message,
        seconds: float,
        split: bool,
    ) -> torch.Tensor:
        """Check a hop's reply to a step on `hidden`; its output as float32. The
        commitment of a step sent `split` is checked when it comes (`_check_pending`)."""
        state.observe(seconds, hidden.shape[1])
        raw = reply.tensors[0] if len(reply.tensors) == 1 else None
        if raw is None or tuple(raw.shape) != tuple(hidden.shape) or not raw.is_floating_point():
            raise NetworkError(f"{state.hop.peer_id} returned a malformed step output")
        auditor = self.auditor
        if auditor is None:
            if not all_finite(raw):
                raise NetworkError(f"{state.hop.peer_id} returned non-finite hidden states")
            out = raw.float()
        else:
            pending = state.audit.pending
            if pending is not None:  # the commitment of this hop's step before
                previous = reply.fields.get("previous")
                if type(previous) is not dict:
                    raise NetworkError(f"{state.hop.peer_id} withheld its last commitment")
                await self._check_pending(state, pending, previous)
                state.audit.pending = None
            out = raw.float()
            if split and reply.fields.get("commitment_follows") is True:
                state.audit.pending = auditor.take_output(state, hidden, mask, raw, out)
            else:
                auditor.check_step(state, hidden, mask, reply, raw, out)  # finite values too
                back = await auditor.take_receipt(state, reply.fields)
                if back:
                    state.audit.countersign = back
        state.length += hidden.shape[1]
        state.inputs.append(hidden)
        state.masks.append(mask)
        return out

    async def _recover(
        self, failed: HopState, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[HopState], torch.Tensor]:
        """Replace `failed` by new servers rebuilt from its history plus this step."""
        self.swarm.fail(failed.hop.peer_id)
        await self.swarm.pool.drop(failed.hop.peer_id)
        history = [*failed.inputs, hidden], [*failed.masks, mask]
        tokens = hidden.shape[1]
        for _attempt in range(MAX_RECOVERY_ATTEMPTS):
            await self.swarm.refresh(force=True)
            states = await self._open_route(failed.hop.start, failed.hop.end)
            x_in, m = torch.cat(history[0], dim=1), torch.cat(history[1], dim=1)
            x = x_in
            try:
                for state in states:
                    x = await self._send_step(state, x, m)
                if failed.audit.pending is not None and self.auditor is not None:
                    self.auditor.compare_lost(failed, failed.audit.pending, x_in, m, x)
                return states, x[:, -tokens:]
            except NetworkError as exc:
                broken = next((s for s in states if s.length == 0), states[-1])
                log.warning("replacement %s failed too: %s", broken.hop.peer_id, exc)
                self.swarm.fail(broken.hop.peer_id)
                await self.swarm.pool.drop(broken.hop.peer_id)
        raise RouteError(f"could not re-route blocks {failed.hop.start}-{failed.hop.end}")


def _input_came_too_late(exc: NetworkError) -> bool:
    """Whether a forwarded step failed only because its server's input was late."""
    return isinstance(exc, RemoteError) and exc.code == ServerCode.UPSTREAM_TIMEOUT


class _Sent:
    """One hop's request of a step: sent (or failed to be), reply to come."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._pending: PendingReply | None = None
        self._error: NetworkError | None = None
        self.split = False  # the step was sent `split`: its commitment may follow
        self.fields: dict[str, object] = {}  # of the reply, once it came

    @property
    def arrived(self) -> bool:
        """Whether the reply is here already."""
        return self._pending is not None and self._pending.arrived

    def set(self, pending: PendingReply) -> None:
        self._pending = pending
        self._event.set()

    def fail(self, error: NetworkError) -> None:
        self._error = error
        self._event.set()

    async def reply(self, deadline: float) -> Message:
        """The reply, or NetworkError (RequestTimeout past `deadline`)."""
        if not self._event.is_set():  # (usually it is: a cancel scope less per hop)
            with trio.move_on_at(deadline):
                await self._event.wait()
        if self._pending is None:
            raise self._error or RequestTimeout("the request could not be sent in time")
        message = await self._pending.wait(max(0.0, deadline - trio.current_time()))
        self.fields = message.fields
        return message
