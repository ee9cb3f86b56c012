"""Server-to-server forwarding on real data-plane sockets on 127.0.0.1, in one process.

The multi-process tests (tests/e2e) check forwarding end to end through `plexus serve`;
these drive the protocol of docs/protocol.md, Part 5, message by message: grants,
pushes, waiting steps and their errors, and the client falling back to relaying.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import trio

from plexus.client import inference
from plexus.client.audit import Auditor
from plexus.client.inference import InferenceSession
from plexus.client.planner import ServerInfo
from plexus.client.pool import ConnectionPool
from plexus.client.swarm import SwarmView
from plexus.identity import Identity
from plexus.models import SpanSession, load_span
from plexus.models.resolve import open_model
from plexus.p2p.dataplane import Message, RemoteError, serve_dataplane
from plexus.p2p.route_grant import GrantHop, RouteGrant, sign_grant
from plexus.server.backend import SpanBackend
from plexus.server.errors import ServerCode, ServerError
from plexus.server.forwarding import Forwarder
from plexus.server.handlers import BlockServerHandlers
from plexus.server.verifier import ServerVerifier
from plexus.verification import NETWORK_ID

SPANS = [(0, 2), (3, 5), (6, 7)]


@dataclass
class Server:
    identity: Identity
    handlers: BlockServerHandlers
    address: str
    start: int
    end: int

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id_str

    def info(self) -> ServerInfo:
        return ServerInfo(self.peer_id, self.start, self.end, 1000.0, address=self.address)


@asynccontextmanager
async def swarm(folder: Path, model_id: str, spans=SPANS) -> AsyncIterator[list[Server]]:  # type: ignore[no-untyped-def]
    servers = []
    async with trio.open_nursery() as nursery:
        for start, end in spans:
            identity = Identity.generate(os.urandom(32))
            backend = SpanBackend(load_span(folder, start, end, progress=False))
            verifier = ServerVerifier(identity, model_id, params_per_block=1000)
            handlers = BlockServerHandlers(backend, model_id, {}, verifier)
            pool = await nursery.start(_pool, identity)
            handlers.forwarder = Forwarder(
                identity.peer_id_str, NETWORK_ID, model_id, pool, nursery
            )
            nursery.start_soon(backend.run)
            dp = await nursery.start(serve_dataplane, identity, "127.0.0.1", 0, handlers.router)
            servers.append(Server(identity, handlers, f"127.0.0.1:{dp.port}", start, end))
        yield servers
        nursery.cancel_scope.cancel()


async def _pool(identity: Identity, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    async with ConnectionPool.open(identity) as pool:
        task_status.started(pool)
        await trio.sleep_forever()


class StaticNode:
    """A DHT stand-in that knows nothing (the swarm view is filled in by the test)."""

    async def find_servers(self, model_id: str) -> list:  # type: ignore[type-arg]
        return []


def reference(folder: Path, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
    sessions = [SpanSession(load_span(folder, a, b, progress=False)) for a, b in SPANS]
    outs = []
    for x in hidden:
        for s in sessions:
            x = s.step(x)
        outs.append(x)
    return outs


@pytest.fixture
def tiny(model_dirs: dict[str, Path], tmp_path: Path) -> tuple[Path, str]:
    return model_dirs["tiny"], open_model(str(model_dirs["tiny"]), tmp_path).model_id


@pytest.mark.parametrize("forwarding", [True, False])
async def test_forwarded_steps_equal_relayed_and_local(tiny, forwarding: bool) -> None:  # type: ignore[no-untyped-def]
    folder, model_id = tiny
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 5, 128, generator=gen)] + [
        torch.randn(1, 1, 128, generator=gen) for _ in range(6)
    ]
    expected = reference(folder, inputs)
    async with swarm(folder, model_id) as servers:
        client = Identity.generate(os.urandom(32))
        async with ConnectionPool.open(client) as pool:
            view = SwarmView(StaticNode(), pool, model_id)  # type: ignore[arg-type]
            view.servers = {s.peer_id: s.info() for s in servers}
            view._refreshed = 1e18  # never look the swarm up again
            session = InferenceSession(view, 8, 128, 64, forwarding=forwarding)
            await session.open()
            outs = [await session.step(x) for x in inputs]
            await session.close()
    for got, want in zip(outs, expected, strict=True):
        assert torch.equal(got, want)
    legs = (len(SPANS) - 1) * len(inputs)
    assert session.forwarded_legs == (legs if forwarding else 0)
    assert session.relayed_legs == 0
    assert session.failovers == 0
    pushed = [s.handlers.forwarder.pushes_received for s in servers]  # type: ignore[union-attr]
    assert pushed == ([0, len(inputs), len(inputs)] if forwarding else [0, 0, 0])


async def _session(
    view: SwarmView,
    servers: list[Server],
    forwarding: bool = True,
    auditor: Auditor | None = None,
) -> InferenceSession:
    view.servers = {s.peer_id: s.info() for s in servers}
    view._refreshed = 1e18  # never look the swarm up again
    session = InferenceSession(view, 8, 128, 64, auditor=auditor, forwarding=forwarding)
    await session.open()
    return session


async def test_later_hops_requests_leave_before_the_first(tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The first server computes as soon as its request lands: nothing the client sends
    afterwards competes with it for a shared core."""
    folder, model_id = tiny
    order: list[str] = []
    send = InferenceSession._send

    async def recording(self, state, message, into, tokens) -> None:  # type: ignore[no-untyped-def]
        order.append(state.hop.peer_id)
        await send(self, state, message, into, tokens)

    monkeypatch.setattr(InferenceSession, "_send", recording)
    inputs = [torch.randn(1, 3, 128)] + [torch.randn(1, 1, 128) for _ in range(2)]
    client = Identity.generate(os.urandom(32))
    async with swarm(folder, model_id) as servers, ConnectionPool.open(client) as pool:
        session = await _session(SwarmView(StaticNode(), pool, model_id), servers)  # type: ignore[arg-type]
        outs = [await session.step(x) for x in inputs]
    assert all(torch.equal(a, b) for a, b in zip(outs, reference(folder, inputs), strict=True))
    first, middle, last = (s.peer_id for s in servers)
    assert order == [middle, last, first] * len(inputs)


@pytest.mark.parametrize("forwarding", [True, False])
async def test_while_waiting_runs_at_most_once_a_step_when_it_fits(tiny, forwarding: bool) -> None:  # type: ignore[no-untyped-def]
    folder, model_id = tiny
    inputs = [torch.randn(1, 4, 128)] + [torch.randn(1, 1, 128) for _ in range(7)]
    cheap: list[float] = []
    slow: list[float] = []

    def sleepy() -> None:
        slow.append(trio.current_time())
        time.sleep(0.3)  # far longer than a step of the tiny model

    client = Identity.generate(os.urandom(32))
    async with swarm(folder, model_id) as servers, ConnectionPool.open(client) as pool:
        view = SwarmView(StaticNode(), pool, model_id)  # type: ignore[arg-type]
        session = await _session(view, servers, forwarding)
        outs = []
        for k, x in enumerate(inputs):
            work = (lambda: cheap.append(trio.current_time())) if k < 4 else sleepy
            out, _ = await session.step_and(x, None, while_waiting=work)
            outs.append(out)
    assert all(torch.equal(a, b) for a, b in zip(outs, reference(folder, inputs), strict=True))
    assert 1 <= len(cheap) <= 4  # skipped only when the last reply was already there
    assert len(slow) == 1  # then known to take longer than the wait: not again


def _replace_push(
    server: Server, push: Callable[..., Awaitable[bool]]
) -> Callable[..., Awaitable[bool]]:
    """Make `server` push its outputs with `push`; its own push, to call from there."""
    forwarder = server.handlers.forwarder
    assert forwarder is not None
    original = forwarder.push
    forwarder.push = push  # type: ignore[method-assign]
    return original


async def test_server_that_cannot_reach_the_next_one_is_relayed(tiny) -> None:  # type: ignore[no-untyped-def]
    folder, model_id = tiny
    inputs = [torch.randn(1, 4, 128)] + [torch.randn(1, 1, 128) for _ in range(3)]
    expected = reference(folder, inputs)
    async with swarm(folder, model_id) as servers:

        async def unreachable(*args: object) -> bool:
            return False  # as when the next server's address cannot be dialled

        _replace_push(servers[1], unreachable)
        client = Identity.generate(os.urandom(32))
        async with ConnectionPool.open(client) as pool:
            view = SwarmView(StaticNode(), pool, model_id)  # type: ignore[arg-type]
            view.servers = {s.peer_id: s.info() for s in servers}
            view._refreshed = 1e18
            session = InferenceSession(view, 8, 128, 64)
            await session.open()
            outs = [await session.step(x) for x in inputs]
    assert all(torch.equal(a, b) for a, b in zip(outs, expected, strict=True))
    assert session.forwarded_legs == len(inputs)  # first -> middle
    assert session.relayed_legs == len(inputs)  # middle -> last, through the client
    assert session.failovers == 0


@pytest.mark.parametrize("audited", [False, True])
async def test_a_server_whose_input_came_too_late_is_relayed_not_failed(
    tiny, monkeypatch, audited: bool
) -> None:  # type: ignore[no-untyped-def]
    """The middle server says it forwarded, but its first push never lands: the last
    server answers UPSTREAM_TIMEOUT. It is alive, so the client relays that step to it
    and keeps forwarding afterwards; failing it would leave blocks 6-7 unserved. Audited,
    the last server's commitments (which follow its replies) are all checked too."""
    folder, model_id = tiny
    monkeypatch.setattr(inference, "MIN_STEP_TIMEOUT_S", 1.0)  # how long the last one waits
    inputs = [torch.randn(1, 4, 128)] + [torch.randn(1, 1, 128) for _ in range(3)]
    expected = reference(folder, inputs)
    async with swarm(folder, model_id) as servers:
        lost = [1]

        async def losing_the_first(*args: Any) -> bool:
            if lost:
                lost.pop()
                return True  # as when the push is sent but lost, or arrives too late
            return await push(*args)

        push = _replace_push(servers[1], losing_the_first)
        client = Identity.generate(os.urandom(32))
        async with ConnectionPool.open(client) as pool:
            view = SwarmView(StaticNode(), pool, model_id)  # type: ignore[arg-type]
            auditor = Auditor(client, view, floor=0.0) if audited else None
            session = await _session(view, servers, auditor=auditor)
            outs = [await session.step(x) for x in inputs]
            route = [h.hop.peer_id for h in session.hops]
            if auditor is not None:
                await session.settle()
                checked = [h.audit for h in session.hops]
            await session.close()
    assert all(torch.equal(a, b) for a, b in zip(outs, expected, strict=True))
    assert session.failovers == 0
    assert route == [s.peer_id for s in servers]
    assert session.relayed_legs == 1
    assert session.forwarding
    assert session.forwarded_legs == 2 * len(inputs)  # the middle server claimed the lost one
    assert servers[2].handlers.forwarder.pushes_received == len(inputs) - 1  # type: ignore[union-attr]
    if audited:  # every step of every hop came with its checked commitment
        assert [(len(a.records), a.pending, a.tokens_sent) for a in checked] == [(4, None, 7)] * 3
        assert auditor is not None and not auditor.caught_at


async def test_a_session_whose_inputs_keep_coming_late_stops_forwarding(tiny, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A middle server that always says it forwarded and never does costs the client a
    wait per step: after MAX_LATE_INPUTS of them, the session relays every leg itself."""
    folder, model_id = tiny
    monkeypatch.setattr(inference, "MIN_STEP_TIMEOUT_S", 0.5)
    inputs = [torch.randn(1, 4, 128)] + [torch.randn(1, 1, 128) for _ in range(5)]
    expected = reference(folder, inputs)
    async with swarm(folder, model_id) as servers:

        async def lying(*args: Any) -> bool:
            return True  # "forwarded", and nothing sent

        _replace_push(servers[1], lying)
        client = Identity.generate(os.urandom(32))
        async with ConnectionPool.open(client) as pool:
            session = await _session(SwarmView(StaticNode(), pool, model_id), servers)  # type: ignore[arg-type]
            outs = [await session.step(x) for x in inputs]
            await session.close()
    assert all(torch.equal(a, b) for a, b in zip(outs, expected, strict=True))
    assert (session.failovers, session.late_inputs) == (0, inference.MAX_LATE_INPUTS)
    assert not session.forwarding
    assert session.forwarded_legs == 2 * inference.MAX_LATE_INPUTS  # then none
    assert servers[2].handlers.forwarder.pushes_received == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("forwarding", [True, False])
async def test_the_only_server_of_a_span_is_tried_again_after_one_failure(
    tiny, forwarding: bool
) -> None:  # type: ignore[no-untyped-def]
    """The last server fails one step (an error, as after a timeout): the client backs
    off from it, finds no other server for blocks 4-7 and, rather than give up, opens a
    new session on it, replays the history and carries on with the same output."""
    folder, model_id = tiny
    inputs = [torch.randn(1, 4, 128)] + [torch.randn(1, 1, 128) for _ in range(4)]
    spans = [(0, 3), (4, 7)]
    whole = SpanSession(load_span(folder, 0, 7, progress=False))
    expected = [whole.step(x) for x in inputs]
    async with swarm(folder, model_id, spans=spans) as servers:
        backend = servers[1].handlers.backend
        step, calls = backend.step, []

        async def failing_the_third(*args: Any, **kwargs: Any) -> torch.Tensor:
            calls.append(1)
            if len(calls) == 3:
                raise ServerError(ServerCode.MALFORMED_REQUEST, "injected failure")
            return await step(*args, **kwargs)

        backend.step = failing_the_third  # type: ignore[method-assign]
        client = Identity.generate(os.urandom(32))
        async with ConnectionPool.open(client) as pool:
            view = SwarmView(StaticNode(), pool, model_id)  # type: ignore[arg-type]
            session = await _session(view, servers, forwarding)

            async def known(force: bool = False) -> None:
                pass  # the servers the test filled in stay (a lookup would find them)

            view.refresh = known  # type: ignore[method-assign]
            outs = [await session.step(x) for x in inputs]
            route = [h.hop.peer_id for h in session.hops]
            backed_off = view.backed_off()
            await session.close()
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(outs, expected, strict=True))
    assert session.failovers == 1
    assert route == [s.peer_id for s in servers]
    assert servers[1].peer_id in backed_off  # backed off, and used all the same


async def _open(conn, start: int, end: int, model_id: str) -> str:  # type: ignore[no-untyped-def]
    reply = await conn.request(
        Message("open", {"model_id": model_id, "start": start, "end": end, "max_length": 32})
    )
    return str(reply.fields["session_id"])


async def test_pushes_and_waits_are_checked(tiny) -> None:  # type: ignore[no-untyped-def]
    folder, model_id = tiny
    async with swarm(folder, model_id, spans=[(0, 3), (4, 7)]) as (first, second):
        client, stranger = Identity.generate(os.urandom(32)), Identity.generate(os.urandom(32))
        async with ConnectionPool.open(client) as pool, ConnectionPool.open(stranger) as other:
            c1 = await pool.get(first.peer_id, first.address)
            c2 = await pool.get(second.peer_id, second.address)
            s1, s2 = await _open(c1, 0, 3, model_id), await _open(c2, 4, 7, model_id)
            hops = (
                GrantHop(first.peer_id, s1, 0, 3, first.address),
                GrantHop(second.peer_id, s2, 4, 7, second.address),
            )
            grant = sign_grant(
                RouteGrant(NETWORK_ID, model_id, client.peer_id_str, 5, hops), client
            )
            x = torch.randn(1, 3, 128)

            async def code_of(conn, message: Message) -> int:  # type: ignore[no-untyped-def]
                with pytest.raises(RemoteError) as caught:
                    await conn.request(message, timeout=10)
                return caught.value.code

            upstream = {"session_id": s2, "length": 0, "upstream": True, "wait_ms": 200}
            # waiting for input needs a grant first
            assert await code_of(c2, Message("step", upstream)) == ServerCode.MALFORMED_REQUEST
            # a grant for another session, a forged one, an old one
            wrong = sign_grant(
                RouteGrant(NETWORK_ID, model_id, client.peer_id_str, 6, hops[:1]), client
            )
            bad = {**upstream, **wrong.fields()}
            assert await code_of(c2, Message("step", bad)) == ServerCode.MALFORMED_REQUEST
            forged = {**grant.fields(), "route_sig": "00" * 64}
            assert await code_of(c2, Message("step", {**upstream, **forged})) == 104
            # no input within wait_ms: UPSTREAM_TIMEOUT
            waited = {**upstream, **grant.fields()}
            assert await code_of(c2, Message("step", waited)) == ServerCode.UPSTREAM_TIMEOUT
            assert await code_of(c2, Message("step", waited)) == 104  # seq 5 again: stale
            # an upstream step carries no tensors of its own
            assert await code_of(c2, Message("step", upstream, [x])) == 104
            # pushes from a peer that is neither the owner nor the previous hop
            intruder = await other.get(second.peer_id, second.address)
            push = Message("push", {"session_id": s2, "length": 0}, [x])
            assert await code_of(intruder, push) == ServerCode.UNKNOWN_SESSION
            # pushes with the wrong length, shape or values
            assert await code_of(c2, Message("push", {"session_id": s2, "length": 3}, [x])) == 104
            wide = Message("push", {"session_id": s2, "length": 0}, [torch.randn(1, 3, 64)])
            assert await code_of(c2, wide) == 104
            nan = Message("push", {"session_id": s2, "length": 0}, [x * float("nan")])
            assert await code_of(c2, nan) == 104
            # a waiting step replaced by a newer request on the session: SUPERSEDED
            long_wait = {**upstream, "wait_ms": 20_000}
            async with trio.open_nursery() as nursery:
                codes: list[int] = []

                async def wait_then_record() -> None:
                    codes.append(await code_of(c2, Message("step", long_wait)))

                nursery.start_soon(wait_then_record)
                await trio.sleep(0.3)
                await c2.request(Message("rollback", {"session_id": s2, "length": 0}))
            assert codes == [ServerCode.SUPERSEDED]
            # the first server forwards to the second; both answer the client
            pending = await c2.send_request(Message("step", long_wait))
            step = {"session_id": s1, "length": 0, "forward": True, **grant.fields()}
            r1 = await c1.request(Message("step", step, [x]), timeout=10)
            r2 = await pending.wait(10)
            assert r1.fields["forwarded"] is True
            assert torch.equal(
                r2.tensors[0], SpanSession(second.handlers.backend.span).step(r1.tensors[0])
            )
            # the session is still usable with ordinary steps afterwards
            after = await c2.request(Message("step", {"session_id": s2, "length": 3}, [x[:, :1]]))
            assert after.fields["length"] == 4
