"""A client's inference session through a chain of servers, surviving their failures.

Every hop remembers what it was sent. When a server fails (it crashed, timed out, or
answered with an error), the client backs off from it, plans that hop's blocks onto
other servers, replays the hop's whole input history to rebuild their caches, and
carries on: the output is the same as if nothing had failed.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace

import torch
import trio

from plexus.client.audit import Auditor, HopAudit
from plexus.client.planner import Hop, MissingBlocksError, plan_route
from plexus.client.swarm import SwarmView
from plexus.errors import NetworkError, PlexusError
from plexus.p2p.dataplane import Message

log = logging.getLogger(__name__)

FIRST_STEP_TIMEOUT_S = 60.0  # before any step time was measured
MIN_STEP_TIMEOUT_S = 3.0
TIMEOUT_FACTOR = 20.0  # a step may take this many times its expected duration
MAX_RECOVERY_ATTEMPTS = 6
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

    def timeout(self, tokens: int) -> float:
        if self.seconds_per_token is None:
            return FIRST_STEP_TIMEOUT_S
        return max(MIN_STEP_TIMEOUT_S, TIMEOUT_FACTOR * self.seconds_per_token * tokens)

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
    ) -> None:
        self.swarm = swarm
        self.auditor = auditor
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
        if not self.hops:
            await self.open()
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long)
        index = 0
        while index < len(self.hops):
            state = self.hops[index]
            try:
                out = await self._send_step(state, hidden, mask)
            except NetworkError as exc:
                log.warning(
                    "server %s failed (%s); re-routing blocks %d-%d",
                    state.hop.peer_id,
                    exc,
                    state.hop.start,
                    state.hop.end,
                )
                self.failovers += 1
                replacement, out = await self._recover(state, hidden, mask)
                self.hops[index : index + 1] = replacement
                index += len(replacement)
            else:
                index += 1
            hidden = out
        return hidden

    async def rollback(self, length: int) -> None:
        """Forget everything after the first `length` tokens, on every hop."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back to {length}: session holds {self.length}")
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
        ok = True
        for state in self.hops:
            ok = await self.auditor.audit_hop(state) and ok
        return ok

    async def _close_one(self, state: HopState) -> None:
        try:
            conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
            reply = await conn.request(
                Message("close", {"session_id": state.session_id}), timeout=2.0
            )
            if self.auditor is not None:
                back = await self.auditor.take_receipt(state, reply.fields)
                if back:
                    message = Message("receipt", {"session_id": state.session_id, **back})
                    await conn.request(message, timeout=CLOSE_TIMEOUT_S)
        except NetworkError:
            pass

    # -- internals -----------------------------------------------------------------------
    async def _open_route(self, start: int, end: int) -> list[HopState]:
        for _attempt in range(MAX_RECOVERY_ATTEMPTS):
            # Comparable servers share the load (and new ones get traffic to be audited).
            servers = [replace(s, reputation=s.reputation * random.uniform(0.5, 1.0))
                       for s in self.swarm.servers.values()]  # fmt: skip
            route = plan_route(
                self.num_blocks,
                servers,
                start=start,
                end=end,
                rtts=self.swarm.rtts,
                exclude=self.swarm.backed_off(),
                cache_tokens_needed=self.max_length * self.batch_size,
            )
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
                log.warning("could not open sessions: %s", group.exceptions[0])
                await self.swarm.refresh(force=True)
        raise RouteError(f"no working servers for blocks {start}-{end}")

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
        self, state: HopState, hidden: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        conn = await self.swarm.pool.get(state.hop.peer_id, state.hop.server.address)
        tokens = hidden.shape[1]
        tensors = [hidden] if bool(mask.all()) else [hidden, mask]
        started = time.perf_counter()
        fields = {"session_id": state.session_id, "length": state.length}
        fields.update(state.audit.countersign)
        state.audit.countersign = {}
        reply = await conn.request(Message("step", fields, tensors), timeout=state.timeout(tokens))
        state.observe(time.perf_counter() - started, tokens)
        out = reply.tensors[0] if len(reply.tensors) == 1 else None
        if out is None or tuple(out.shape) != tuple(hidden.shape) or not out.is_floating_point():
            raise NetworkError(f"{state.hop.peer_id} returned a malformed step output")
        if self.auditor is not None:
            self.auditor.check_step(state, hidden, mask, reply, out)
        out = out.float()
        if not bool(torch.isfinite(out).all()):
            raise NetworkError(f"{state.hop.peer_id} returned non-finite hidden states")
        if self.auditor is not None:
            state.audit.outputs.append(out)
            state.audit.countersign = await self.auditor.take_receipt(state, reply.fields)
        state.length += tokens
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
            x, m = torch.cat(history[0], dim=1), torch.cat(history[1], dim=1)
            try:
                for state in states:
                    x = await self._send_step(state, x, m)
                return states, x[:, -tokens:]
            except NetworkError as exc:
                broken = next((s for s in states if s.length == 0), states[-1])
                log.warning("replacement %s failed too: %s", broken.hop.peer_id, exc)
                self.swarm.fail(broken.hop.peer_id)
                await self.swarm.pool.drop(broken.hop.peer_id)
        raise RouteError(f"could not re-route blocks {failed.hop.start}-{failed.hop.end}")
