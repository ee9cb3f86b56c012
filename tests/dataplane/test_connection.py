"""Request/reply over one connection (in-memory streams): multiplexing, one-way messages,
error codes, per-connection limits and timeouts. The network is not the subject here."""

from __future__ import annotations

import logging

import pytest
import torch
import trio
import trio.testing

from plexus.errors import ProtocolError
from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.errors import ConnectionClosed, RemoteError, RequestTimeout
from plexus.p2p.dataplane.limits import Limits, MiB
from plexus.p2p.dataplane.message import Message
from plexus.p2p.dataplane.router import Router
from tests.dataplane.helpers import memory_pair


def make_router() -> tuple[Router, dict]:
    router = Router()
    state: dict = {"oneway": [], "release": trio.Event(), "started": 0}

    @router.route("echo")
    async def echo(peer_id: str, message: Message) -> Message:
        return Message("echoed", {**message.fields, "peer": peer_id}, message.tensors)

    @router.route("sleep")
    async def sleep(peer_id: str, message: Message) -> Message:
        await trio.sleep(message.fields["seconds"])
        return Message("slept", {"index": message.fields.get("index")})

    @router.route("hold")
    async def hold(peer_id: str, message: Message) -> Message:
        state["started"] += 1
        await state["release"].wait()
        return Message("held")

    @router.route("note")
    async def note(peer_id: str, message: Message) -> None:
        state["oneway"].append(message.fields["n"])

    @router.route("refuse")
    async def refuse(peer_id: str, message: Message) -> Message:
        raise ProtocolError("no such session", 100)

    @router.route("crash")
    async def crash(peer_id: str, message: Message) -> Message:
        raise RuntimeError("secret internal detail")

    @router.route("nothing")
    async def nothing(peer_id: str, message: Message) -> None:
        return None

    return router, state


async def test_request_reply_with_tensors_and_authenticated_peer_ids() -> None:
    router, _ = make_router()
    async with memory_pair(router) as (client, server):
        hidden = torch.randn(1, 4, 64, dtype=torch.bfloat16)
        reply = await client.request(Message("echo", {"step": 1}, [hidden]), timeout=5)
        assert reply.type == "echoed" and reply.fields["step"] == 1
        assert reply.fields["peer"] == server.peer_id
        assert torch.equal(reply.tensors[0], hidden)
        assert client.peer_id != server.peer_id
        assert client.peer_limits.max_message == Limits().max_message


async def test_concurrent_requests_are_multiplexed_and_matched_by_id() -> None:
    router, _ = make_router()
    results: dict[int, int] = {}
    async with memory_pair(router) as (client, _server):

        async def one(index: int) -> None:
            seconds = (20 - index) * 0.01  # later requests finish first
            reply = await client.request(Message("sleep", {"seconds": seconds, "index": index}))
            results[index] = reply.fields["index"]

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for index in range(20):
                    nursery.start_soon(one, index)
    assert results == {index: index for index in range(20)}


async def test_one_way_messages_reach_the_handler_without_a_reply() -> None:
    router, state = make_router()
    async with memory_pair(router) as (client, _server):
        for n in range(5):
            await client.send(Message("note", {"n": n}))
        await client.request(Message("echo"), timeout=5)  # ordered after the notes
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(state["oneway"]) == [0, 1, 2, 3, 4]  # handlers run concurrently: any order


async def test_failed_one_way_message_is_reported_back(caplog: pytest.LogCaptureFixture) -> None:
    router, _ = make_router()
    with caplog.at_level(logging.WARNING, logger="plexus.p2p.dataplane.connection"):
        async with memory_pair(router) as (client, _server):
            await client.send(Message("refuse"))
            await client.request(Message("echo"), timeout=5)
            await trio.testing.wait_all_tasks_blocked()
    assert any("no such session" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("message_type", "code", "text"),
    [
        ("refuse", 100, "no such session"),
        ("crash", ErrorCode.INTERNAL, "RuntimeError"),
        ("nothing", ErrorCode.INTERNAL, "no reply"),
        ("missing", ErrorCode.UNKNOWN_TYPE, "missing"),
        ("_reserved", ErrorCode.UNKNOWN_TYPE, "_reserved"),
    ],
)
async def test_handler_failures_become_error_codes(message_type: str, code: int, text: str) -> None:
    router, _ = make_router()
    async with memory_pair(router) as (client, _server):
        with pytest.raises(RemoteError) as info:
            await client.request(Message(message_type), timeout=5)
        assert info.value.code == code and text in str(info.value)
        assert "secret internal detail" not in str(info.value)
        assert (await client.request(Message("echo"), timeout=5)).type == "echoed"


async def test_ping_is_answered_by_the_data_plane_itself() -> None:
    async with memory_pair(None) as (client, server):
        assert await client.ping() >= 0
        assert await server.ping() >= 0


async def test_either_side_may_serve_requests() -> None:
    client_router, _ = make_router()
    async with memory_pair(None, client_router) as (client, server):
        reply = await server.request(Message("echo", {"from": "server"}), timeout=5)
        assert reply.fields == {"from": "server", "peer": client.peer_id}
        with pytest.raises(RemoteError) as info:  # this side has no handler
            await client.request(Message("echo"), timeout=5)
        assert info.value.code == ErrorCode.UNKNOWN_TYPE


async def test_requests_beyond_max_in_flight_are_answered_busy() -> None:
    router, state = make_router()
    outcomes: list[object] = []
    async with memory_pair(router, server_limits=Limits(max_in_flight=2)) as (client, server):

        async def one() -> None:
            try:
                outcomes.append((await client.request(Message("hold"), timeout=5)).type)
            except RemoteError as exc:
                outcomes.append(exc.code)
                if len(outcomes) == 3:
                    state["release"].set()

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
    assert sorted(outcomes, key=str) == sorted(["held", "held", *[ErrorCode.BUSY] * 3], key=str)
    assert server.in_flight == 0


async def test_slow_handlers_are_answered_timeout(autojump_clock: trio.abc.Clock) -> None:
    router, _ = make_router()
    limits = Limits(handler_timeout=1.0)
    async with memory_pair(router, server_limits=limits) as (client, _server):
        with pytest.raises(RemoteError) as info:
            await client.request(Message("sleep", {"seconds": 5}), timeout=10)
        assert info.value.code == ErrorCode.TIMEOUT


async def test_request_timeout_and_late_replies(autojump_clock: trio.abc.Clock) -> None:
    router, _ = make_router()
    async with memory_pair(router) as (client, _server):
        with pytest.raises(RequestTimeout):
            await client.request(Message("sleep", {"seconds": 2}), timeout=1)
        await trio.sleep(2)  # the late reply arrives and is dropped
        assert (await client.request(Message("echo", {"x": 1}), timeout=5)).fields["x"] == 1


async def test_closing_fails_pending_requests() -> None:
    router, _ = make_router()
    async with memory_pair(router) as (client, server):
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await server.aclose()

            nursery.start_soon(close_soon)
            with pytest.raises(ConnectionClosed):
                await client.request(Message("hold"), timeout=5)
        with trio.fail_after(5):
            await client.wait_closed()
        with pytest.raises(ConnectionClosed):
            await client.request(Message("echo"), timeout=5)


async def test_messages_over_the_peers_limit_are_refused_locally() -> None:
    router, _ = make_router()
    server_limits = Limits(max_message=MiB, max_header=4096)
    async with memory_pair(router, server_limits=server_limits) as (client, _server):
        assert client.peer_limits.max_message == MiB
        with pytest.raises(ValueError, match="limit"):
            await client.request(Message("echo", {}, [torch.zeros(MiB // 4 + 1)]), timeout=5)
        reply = await client.request(Message("echo", {}, [torch.zeros(1000)]), timeout=5)
        assert reply.tensors[0].shape == (1000,)


async def test_reader_pauses_when_handlers_hold_too_many_bytes() -> None:
    router, state = make_router()
    limits = Limits(max_buffered=MiB, max_header=4096)
    async with memory_pair(router, server_limits=limits) as (client, server):
        payload = torch.zeros(100_000)  # 400 kB per request
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(client.request, Message("hold", {}, [payload]))
            await trio.testing.wait_all_tasks_blocked()
            assert server.in_flight == 3  # 1.2 MB held > 1 MiB: the reader waits
            state["release"].set()
        assert server.in_flight == 0


async def test_idle_connections_close_but_not_while_requests_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    router, _ = make_router()
    limits = Limits(idle_timeout=2.0, read_timeout=2.0)
    async with memory_pair(router, server_limits=limits) as (client, server):
        reply = await client.request(Message("sleep", {"seconds": 10}), timeout=30)
        assert reply.type == "slept"  # 10 s of handler time is not idleness
        with trio.fail_after(10):
            await server.wait_closed()
        assert server.closed
        with trio.fail_after(10):
            await client.wait_closed()


async def test_inline_handlers_run_in_the_reader_in_arrival_order() -> None:
    router = Router()
    seen: list[int] = []

    @router.route("mark", inline=True)
    async def mark(peer_id: str, message: Message) -> None:
        seen.append(message.fields["n"])

    @router.route("seen")
    async def report(peer_id: str, message: Message) -> Message:
        return Message("seen", {"seen": list(seen)})

    @router.route("bad", inline=True)
    async def bad(peer_id: str, message: Message) -> Message:
        raise ProtocolError("refused inline", 100)

    assert router.inline_types == {"mark", "bad"}
    async with memory_pair(router) as (client, _server):
        for n in range(50):
            await client.send(Message("mark", {"n": n}))
        # Inline handlers finish before the reader takes the next message: every mark
        # is in, in order, by the time a later request's (task) handler runs.
        reply = await client.request(Message("seen"), timeout=5)
        assert reply.fields["seen"] == list(range(50))
        with pytest.raises(RemoteError, match="refused inline"):
            await client.request(Message("bad"), timeout=5)
        assert (await client.request(Message("seen"), timeout=5)).fields["seen"] == seen


async def test_an_inline_test_picks_the_messages_run_in_the_reader() -> None:
    router = Router()
    tasks: dict[int, object] = {}

    def small(message: Message) -> bool:
        return message.fields.get("n", 99) < 3

    @router.route("work", inline=small)
    async def work(peer_id: str, message: Message) -> Message:
        tasks[message.fields["n"]] = trio.lowlevel.current_task()
        return Message("done", {"n": message.fields["n"]})

    assert router.inline_types == set()
    assert router.runs_inline(Message("work", {"n": 1}))
    assert not router.runs_inline(Message("work", {"n": 5}))
    assert not router.runs_inline(Message("other"))
    async with memory_pair(router) as (client, _server):
        for n in range(6):
            reply = await client.request(Message("work", {"n": n}), timeout=5)
            assert reply.fields == {"n": n}  # answered alike, inline or not
    # The inline ones ran in the connection's reader task, the others each in its own.
    assert tasks[0] is tasks[1] is tasks[2]
    assert len({id(tasks[n]) for n in (2, 3, 4, 5)}) == 4
