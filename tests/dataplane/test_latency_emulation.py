"""The testing-only latency emulation delays what a side sends, in order."""

from __future__ import annotations

import pytest
import trio

from plexus.p2p.dataplane.limits import Limits
from plexus.p2p.dataplane.message import Message
from plexus.p2p.dataplane.router import Router
from tests.dataplane.helpers import memory_pair

DELAY = 0.05


def echo_router(seen: list[int]) -> Router:
    router = Router()

    @router.route("echo")
    async def echo(peer_id: str, message: Message) -> Message:
        seen.append(message.fields["n"])
        return Message("echo", message.fields)

    return router


async def test_round_trip_pays_both_one_way_delays() -> None:
    slow = Limits(emulated_delay=DELAY)
    seen: list[int] = []
    async with memory_pair(echo_router(seen), server_limits=slow, client_limits=slow) as (c, _):
        await c.request(Message("echo", {"n": 0}))  # the handshake's _hello is delayed too
        started = trio.current_time()
        await c.request(Message("echo", {"n": 1}))
        elapsed = trio.current_time() - started
    assert 2 * DELAY <= elapsed < 2 * DELAY + 0.2


async def test_jitter_delays_every_message_within_its_bounds() -> None:
    jittery = Limits(emulated_delay=0.02, emulated_jitter=0.03)
    seen: list[int] = []
    async with memory_pair(echo_router(seen), client_limits=jittery) as (client, _):
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(client.send, Message("echo", {"n": n}))
                await trio.sleep(0)
        with trio.fail_after(5):
            while len(seen) < 20:
                await trio.sleep(0.001)
        elapsed = trio.current_time() - started
    assert sorted(seen) == list(range(20))
    assert 0.02 <= elapsed < 0.02 + 0.03 + 0.2


def test_off_by_default_and_bounded() -> None:
    assert Limits().emulated_delay == 0 and Limits().emulated_jitter == 0
    with pytest.raises(ValueError):
        Limits(emulated_delay=-1)


async def test_a_cancelled_message_does_not_block_the_next() -> None:
    slow = Limits(emulated_delay=0.05)
    seen: list[int] = []
    async with memory_pair(echo_router(seen), client_limits=slow) as (client, _):
        await client.request(Message("echo", {"n": 0}))
        with trio.move_on_after(0.01):  # gives up while still held back
            await client.send(Message("echo", {"n": 1}))
        with trio.fail_after(2):
            await client.request(Message("echo", {"n": 2}))
    assert seen == [0, 2]
