"""The compute side of a block server: sessions, the KV-cache budget and the device queue.

Device work goes through one queue drained by one worker task, which runs each job in a
worker thread (torch releases the GIL) so the trio loop keeps serving the network. When
the oldest job is a one-token decode step, every other pending decode step that can share
a forward joins it, so a session waits for at most the step in progress.

A server with a single session runs that session's small steps (a few tokens) inline on
the event loop when the device is idle: no queue and no thread hand-offs, which cost about
half a millisecond per step; with more sessions every job is queued, so that concurrent
decode steps can be batched.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import trio

from plexus.errors import ProtocolError
from plexus.models.batching import batched_decode, can_batch
from plexus.models.finite import all_finite
from plexus.models.session import SpanSession, stateless_forward
from plexus.models.span import SpanModel
from plexus.p2p.dataplane.codes import ErrorCode
from plexus.receipt_writer import Activity
from plexus.server.errors import ServerCode, ServerError

log = logging.getLogger(__name__)


@dataclass
class ServerSession:
    id: str
    owner: str  # authenticated peer id of the client
    model: SpanSession
    max_length: int
    batch_size: int
    start: int = 0  # the blocks the session was opened for (global, inclusive)
    end: int = 0
    last_used: float = field(default_factory=time.monotonic)
    chain: Any = None  # plexus.server.forwarding.ChainState once forwarding is used
    commitments: Any = None  # plexus.server.commitment_box.CommitmentBox for split steps

    @property
    def reserved_tokens(self) -> int:
        return self.max_length * self.batch_size


FREE_LANE_EVERY = 4
"""When clients with a positive balance are waiting, every FREE_LANE_EVERY-th job still
goes to the oldest waiting job of a client with nothing (the rate-limited free lane)."""


INLINE_MAX_TOKENS = 8
"""Jobs of at most this many tokens (batch x length) may run inline (see above)."""


@dataclass
class _Job:
    run: Callable[[], object]
    decode: tuple[ServerSession, torch.Tensor] | None = None
    owner: str = ""  # the client's peer id (its balance sets its priority)
    tokens: int = 1 << 30  # batch x length of a session step (small ones may run inline)
    done: trio.Event = field(default_factory=trio.Event)
    result: object = None
    error: BaseException | None = None


class SpanBackend:
    """Sessions on one span and the queue that runs their steps on the device."""

    def __init__(
        self,
        span: SpanModel,
        *,
        max_sessions: int = 64,
        cache_tokens: int = 32768,
        idle_timeout: float = 300.0,
        max_batch: int = 16,
        device: str | torch.device = "cpu",
        inline_max_tokens: int = INLINE_MAX_TOKENS,
    ) -> None:
        self.span = span
        self.max_sessions = max_sessions
        self.cache_tokens = cache_tokens
        self.idle_timeout = idle_timeout
        self.max_batch = max_batch
        self.device = torch.device(device)
        self.sessions: dict[str, ServerSession] = {}
        self._queue: list[_Job] = []
        self._wakeup = trio.Event()
        self.batched_steps = 0  # decode steps that ran batched with others (for reports)
        self.steps = 0
        self.accepting = True  # False while shutting down: no new sessions
        # Client peer id -> balance (plexus.server.accounting); None: first come, first served.
        self.priority: Callable[[str], float] | None = None
        self._picks = 0
        self.inline_max_tokens = inline_max_tokens
        self._busy = False  # a job is running (in the worker thread or inline)
        self.inline_steps = 0
        self.activity = Activity()  # background work (ledger writes) waits for quiet

    def replace_span(self, span: SpanModel) -> None:
        """Serve other blocks (rebalancing); only allowed while no session is open."""
        if self.sessions:
            raise RuntimeError("cannot change span while sessions are open")
        self.span = span

    # -- bookkeeping -------------------------------------------------------------------
    @property
    def free_cache_tokens(self) -> int:
        used = sum(s.reserved_tokens for s in self.sessions.values())
        return max(0, self.cache_tokens - used)

    def blocks_for(self, start: int, end: int) -> range:
        """Local indices of global blocks start..end, or SPAN_MISMATCH."""
        if not (self.span.start <= start <= end <= self.span.end):
            raise ServerError(
                ServerCode.SPAN_MISMATCH,
                f"blocks {start}-{end} requested; this server serves "
                f"{self.span.start}-{self.span.end}",
            )
        return range(start - self.span.start, end - self.span.start + 1)

    def open_session(
        self, owner: str, start: int, end: int, max_length: int, batch_size: int = 1
    ) -> ServerSession:
        if not self.accepting:
            raise ProtocolError("server is shutting down", ErrorCode.SHUTTING_DOWN)
        blocks = self.blocks_for(start, end)
        if not (1 <= max_length <= 1_000_000 and 1 <= batch_size <= 1024):
            raise ServerError(ServerCode.MALFORMED_REQUEST, "max_length or batch_size out of range")
        if len(self.sessions) >= self.max_sessions:
            raise ServerError(
                ServerCode.TOO_MANY_SESSIONS, f"server holds its maximum of {self.max_sessions}"
            )
        wanted = max_length * batch_size
        if wanted > self.free_cache_tokens:
            raise ServerError(
                ServerCode.CACHE_EXHAUSTED,
                f"session needs {wanted} cache tokens; {self.free_cache_tokens} of "
                f"{self.cache_tokens} are free",
            )
        session = ServerSession(
            secrets.token_hex(16),
            owner,
            SpanSession(self.span, blocks),
            max_length,
            batch_size,
            start,
            end,
        )
        self.sessions[session.id] = session
        return session

    def get(self, owner: str, session_id: str) -> ServerSession:
        session = self.sessions.get(session_id)
        if session is None or session.owner != owner:  # never reveal others' sessions
            raise ServerError(ServerCode.UNKNOWN_SESSION, f"no session {session_id!r}")
        session.last_used = time.monotonic()
        return session

    def close_session(self, owner: str, session_id: str) -> None:
        self.get(owner, session_id)
        del self.sessions[session_id]

    def close_sessions_of(self, owner: str) -> int:
        """Drop every session of a client (it disconnected)."""
        ids = [sid for sid, s in self.sessions.items() if s.owner == owner]
        for sid in ids:
            del self.sessions[sid]
        return len(ids)

    def expire_idle(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        idle = [sid for sid, s in self.sessions.items() if now - s.last_used > self.idle_timeout]
        for sid in idle:
            del self.sessions[sid]
        return len(idle)

    # -- device work -------------------------------------------------------------------
    async def step(
        self,
        session: ServerSession,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        *,
        checked: bool = False,
    ) -> torch.Tensor:
        """Run one step of `session`; `checked`: `hidden` passed `check_hidden` already
        (input pushed by the previous hop is checked when it arrives)."""
        if not checked:
            self.check_hidden(hidden, session.batch_size)
        if session.model.length + hidden.shape[1] > session.max_length:
            raise ServerError(
                ServerCode.SESSION_FULL,
                f"session declared max_length {session.max_length}; it holds "
                f"{session.model.length} and the step adds {hidden.shape[1]}",
            )
        hidden = hidden.to(self.device, self.span_dtype)
        decode = (session, hidden) if hidden.shape[1] == 1 and mask is None else None
        tokens = hidden.shape[0] * hidden.shape[1]
        job = _Job(lambda: session.model.step(hidden, mask), decode, session.owner, tokens)
        return await self._submit(job)  # type: ignore[return-value]

    async def rollback(self, session: ServerSession, length: int) -> None:
        await self._submit(_Job(lambda: session.model.rollback(length), owner=session.owner))

    async def forward(
        self,
        start: int,
        end: int,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        owner: str = "",
    ) -> torch.Tensor:
        """A stateless forward over a whole sequence (replays and audits)."""
        span, blocks = self.span, self.blocks_for(start, end)
        self.check_hidden(hidden, None)
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long)
        hidden = hidden.to(self.device, self.span_dtype)
        job = _Job(
            lambda: stateless_forward(span, hidden, mask.to(self.device), blocks), owner=owner
        )
        return await self._submit(job)  # type: ignore[return-value]

    @property
    def span(self) -> SpanModel:
        return self._span

    @span.setter
    def span(self, span: SpanModel) -> None:
        self._span = span
        self.span_dtype: torch.dtype = next(span.parameters()).dtype  # read every step

    def check_hidden(self, hidden: torch.Tensor, batch: int | None) -> None:
        size = self.span.config.hidden_size
        if hidden.dim() != 3 or hidden.shape[2] != size or hidden.shape[1] == 0:
            raise ServerError(
                ServerCode.MALFORMED_REQUEST,
                f"hidden states must be [batch, tokens>0, {size}], got {list(hidden.shape)}",
            )
        if batch is not None and hidden.shape[0] != batch:
            raise ServerError(
                ServerCode.MALFORMED_REQUEST, f"session batch is {batch}, got {hidden.shape[0]}"
            )
        if not hidden.is_floating_point() or not all_finite(hidden):
            raise ServerError(ServerCode.MALFORMED_REQUEST, "hidden states must be finite floats")

    async def _submit(self, job: _Job) -> object:
        if self._may_run_inline(job):
            self._busy = True
            try:
                with self.activity:
                    result = job.run()
            finally:
                self._busy = False
                self.steps += 1
                self.inline_steps += 1
            await trio.lowlevel.cancel_shielded_checkpoint()  # the step happened: keep it
            return result
        self._queue.append(job)
        self._wakeup.set()
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _may_run_inline(self, job: _Job) -> bool:
        return self.would_run_inline(job.tokens)

    def would_run_inline(self, tokens: int) -> bool:
        """Whether a session step of `tokens` (batch x length) would run inline now."""
        return (
            tokens <= self.inline_max_tokens
            and not self._busy
            and not self._queue
            and len(self.sessions) <= 1
        )

    async def run(self) -> None:
        """Drain the device queue forever; run this in the server's nursery."""
        limiter = trio.CapacityLimiter(1)
        while True:
            if not self._queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            jobs = self._take_batch()
            self._busy = True
            try:
                with self.activity:
                    await self._run_jobs(jobs, limiter)
            except Exception as exc:  # reported to the waiting request, never fatal here
                for job in jobs:
                    job.error = exc
            finally:
                self._busy = False
            self.steps += len(jobs)
            for job in jobs:
                job.done.set()

    async def _run_jobs(self, jobs: list[_Job], limiter: trio.CapacityLimiter) -> None:
        if len(jobs) > 1:
            sessions = [j.decode[0].model for j in jobs if j.decode]
            hiddens = [j.decode[1] for j in jobs if j.decode]
            results = await trio.to_thread.run_sync(
                lambda s=sessions, h=hiddens: batched_decode(s, h), limiter=limiter
            )
            for job, result in zip(jobs, results, strict=True):
                job.result = result
            self.batched_steps += len(jobs)
        else:
            jobs[0].result = await trio.to_thread.run_sync(jobs[0].run, limiter=limiter)

    def _next_index(self) -> int:
        """Highest balance first (oldest among equals); a free-lane share for the rest."""
        if self.priority is None or len(self._queue) == 1:
            return 0
        balances = [self.priority(job.owner) for job in self._queue]
        self._picks += 1
        if self._picks % FREE_LANE_EVERY == 0:
            free = [i for i, b in enumerate(balances) if b <= 0]
            if free:
                return free[0]
        return max(range(len(balances)), key=lambda i: (balances[i], -i))

    def _take_batch(self) -> list[_Job]:
        first = self._queue.pop(self._next_index())
        if first.decode is None:
            return [first]
        batch = [first]
        for job in list(self._queue):
            if len(batch) >= self.max_batch:
                break
            if job.decode is None or any(job.decode[0] is j.decode[0] for j in batch):
                continue
            candidate = [*batch, job]
            if can_batch([j.decode[0].model for j in candidate], [j.decode[1] for j in candidate]):
                batch.append(job)
                self._queue.remove(job)
        return batch

    async def reap_idle(self, period: float = 5.0) -> None:
        while True:
            await trio.sleep(period)
            if n := self.expire_idle():
                log.info("dropped %d idle session(s)", n)
