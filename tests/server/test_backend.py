"""The server's compute side: concurrent sessions, batching, budgets and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import trio
import trio.testing

from plexus.models import SpanSession, load_span
from plexus.server.backend import SpanBackend
from plexus.server.errors import ServerCode, ServerError


@pytest.fixture
def span(model_dirs: dict[str, Path]):  # type: ignore[no-untyped-def]
    return load_span(model_dirs["tiny"], 2, 5, progress=False)


async def test_concurrent_sessions_equal_sequential_runs(span) -> None:
    backend = SpanBackend(span, max_sessions=8, cache_tokens=8 * 64)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randn(1, 3 + i, 128, generator=gen) for i in range(8)]
    steps = [[torch.randn(1, 1, 128, generator=gen) for _ in range(5)] for _ in range(8)]
    expected = []
    for prompt, tokens in zip(prompts, steps, strict=True):
        solo = SpanSession(span)
        expected.append([solo.step(prompt)] + [solo.step(t) for t in tokens])
    got: dict[int, list[torch.Tensor]] = {}

    async def client(i: int) -> None:
        session = backend.open_session(f"peer{i}", 2, 5, max_length=64)
        outs = [await backend.step(session, prompts[i], None)]
        for t in steps[i]:
            outs.append(await backend.step(session, t, None))
        got[i] = outs
        backend.close_session(f"peer{i}", session.id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend.run)
        async with trio.open_nursery() as clients:
            for i in range(8):
                clients.start_soon(client, i)
        nursery.cancel_scope.cancel()
    for i in range(8):
        for e, g in zip(expected[i], got[i], strict=True):
            assert (e - g).abs().max().item() <= 1e-4
    assert backend.batched_steps > 0, "concurrent decode steps should have been batched"
    assert not backend.sessions


async def test_budget_and_session_errors(span) -> None:
    backend = SpanBackend(span, max_sessions=2, cache_tokens=100)
    a = backend.open_session("alice", 2, 5, max_length=60)
    with pytest.raises(ServerError) as err:
        backend.open_session("bob", 2, 5, max_length=60)
    assert err.value.server_code == ServerCode.CACHE_EXHAUSTED
    backend.open_session("bob", 3, 4, max_length=40)
    with pytest.raises(ServerError) as err:
        backend.open_session("carol", 2, 2, max_length=1)
    assert err.value.server_code == ServerCode.TOO_MANY_SESSIONS
    with pytest.raises(ServerError) as err:
        backend.open_session("carol", 0, 3, max_length=1)
    assert err.value.server_code == ServerCode.SPAN_MISMATCH
    with pytest.raises(ServerError) as err:
        backend.get("mallory", a.id)  # someone else's session
    assert err.value.server_code == ServerCode.UNKNOWN_SESSION
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend.run)
        with pytest.raises(ServerError) as err:
            await backend.step(a, torch.randn(1, 2, 7), None)
        assert err.value.server_code == ServerCode.MALFORMED_REQUEST
        with pytest.raises(ServerError) as err:
            await backend.step(a, torch.full((1, 2, 128), float("nan")), None)
        assert err.value.server_code == ServerCode.MALFORMED_REQUEST
        with pytest.raises(ServerError) as err:
            await backend.step(a, torch.randn(1, 61, 128), None)
        assert err.value.server_code == ServerCode.SESSION_FULL
        out = await backend.step(a, torch.randn(1, 4, 128), None)
        assert out.shape == (1, 4, 128)
        nursery.cancel_scope.cancel()
    assert backend.expire_idle(now=1e12) == 2


async def test_busy_server_serves_higher_balances_first(span) -> None:
    """Priority by balance, with a rate-limited free lane for clients with nothing."""
    backend = SpanBackend(span, max_sessions=8, cache_tokens=8 * 64)
    balances = {"rich": 100.0, "some": 5.0, "new1": 0.0, "new2": 0.0}
    backend.priority = lambda peer: balances.get(peer, 0.0)
    order: list[str] = []
    x = torch.randn(1, 2, 128)

    async def submit(owner: str) -> None:
        await backend.forward(2, 5, x, None, owner)
        order.append(owner)

    async with trio.open_nursery() as nursery:
        # Queue everything while the worker is not running yet: the server is "busy".
        # One at a time: trio does not promise to run tasks in the order they started,
        # and the free lane is first come, first served.
        for owner in ["new1", "new2", "some", "rich", "rich", "rich", "rich"]:
            nursery.start_soon(submit, owner)
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(backend.run)
        with trio.fail_after(30):
            while len(order) < 7:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # Paying clients first, highest balance first; every 4th pick is the free lane's.
    assert order == ["rich", "rich", "rich", "new1", "rich", "some", "new2"]


def test_only_steps_that_wait_for_nothing_run_in_the_reader(span) -> None:
    from plexus.p2p.dataplane import Message
    from plexus.server.handlers import BlockServerHandlers

    backend = SpanBackend(span, max_sessions=4, cache_tokens=4 * 64)
    router = BlockServerHandlers(backend, "m", {}).router
    session = backend.open_session("peer", 2, 5, max_length=64)
    fields = {"session_id": session.id, "length": 3}

    def step(tensors: list[torch.Tensor], **extra: object) -> Message:
        return Message("step", {**fields, **extra}, tensors)

    one = torch.zeros(1, 1, 128)
    assert router.runs_inline(step([one]))  # a decode step on an idle server
    assert router.runs_inline(Message("push", fields, [one]))
    assert not router.runs_inline(step([torch.zeros(1, 16, 128)]))  # a prefill is queued
    assert not router.runs_inline(step([], upstream=True))  # waits for pushed input
    assert not router.runs_inline(step([one], route={"seq": 1}))  # dials the next hop first
    assert not router.runs_inline(step([torch.zeros(128)]))  # malformed: the task answers
    assert not router.runs_inline(Message("rollback", fields))
    backend.open_session("other", 2, 5, max_length=64)
    assert not router.runs_inline(step([one]))  # two sessions: steps queue, to batch
