"""When a block server announces: every period, and after changes, but not more often
than CHANGE_MIN_GAP_S (announcing costs the CPU a computing span needs). Trio's mock
clock drives the loop; the DHT node is a recorder (the DHT is not the subject here)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import trio
import trio.testing

from plexus.receipt_writer import QUIET_S
from plexus.server.runner import CHANGE_MAX_WAIT_S, CHANGE_MIN_GAP_S, _announce_loop

PERIOD = 30.0


class Activity:
    """Steps run (the server is not quiet) from `busy_from` to `busy_until`, mock time."""

    def __init__(self, busy_from: float, busy_until: float) -> None:
        self.busy_from, self.busy_until = busy_from, busy_until

    def quiet_for(self) -> float:
        now = trio.current_time()
        if now < self.busy_from:
            return float("inf")
        return max(0.0, now - self.busy_until)


class Backend:
    def __init__(self, activity: Activity) -> None:
        self.sessions: dict[str, object] = {}
        self.free_cache_tokens = 1000
        self.activity = activity


def run_loop(
    script: list[tuple[float, int]], until: float, busy: tuple[float, float] = (1e9, 1e9)
) -> list[float]:
    """Announcement times while the number of sessions follows `script` (time, count),
    the server computing during `busy` (from, until)."""
    backend = Backend(Activity(*busy))
    times: list[float] = []

    async def announce(record: object) -> None:
        times.append(trio.current_time())

    node = SimpleNamespace(announce=announce, config=SimpleNamespace(operation_timeout=5.0))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_announce_loop, node, backend, lambda: None, PERIOD)
            for at, count in script:
                await trio.sleep_until(at)
                backend.sessions = {str(i): object() for i in range(count)}
            await trio.sleep_until(until)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return times


def test_a_change_is_announced_within_a_poll() -> None:
    times = run_loop([(10.0, 1)], until=12.0)
    assert len(times) == 1 and 10.0 <= times[0] <= 10.5


def test_changes_closer_than_the_gap_go_out_together() -> None:
    # A session opens and closes every second: one announcement per gap, not two a second.
    script = [(10.0 + k, (k + 1) % 2) for k in range(12)]
    times = run_loop(script, until=22.5)
    assert 10.0 <= times[0] <= 10.5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and all(g >= CHANGE_MIN_GAP_S for g in gaps)
    assert len(times) <= 1 + (22.5 - 10.0) / CHANGE_MIN_GAP_S


def test_the_last_change_is_not_lost_and_periods_still_tick() -> None:
    times = run_loop([(10.0, 1), (11.0, 0)], until=10.0 + PERIOD + 1.0)
    assert 10.0 <= times[0] <= 10.5
    assert 10.0 + CHANGE_MIN_GAP_S <= times[1] <= 10.5 + CHANGE_MIN_GAP_S  # the close
    assert len(times) == 2  # nothing changed after: the next one is a period later
    assert run_loop([], until=PERIOD + 1.0) == [PERIOD]


def test_a_change_waits_for_the_server_to_be_quiet() -> None:
    # A session opens at 10 s and computes until 12 s: announced once it is quiet.
    times = run_loop([(10.0, 1)], until=14.0, busy=(10.0, 12.0))
    assert len(times) == 1 and 12.0 + QUIET_S <= times[0] <= 12.5 + QUIET_S


def test_a_change_waits_for_quiet_only_so_long() -> None:
    # Back-to-back sessions, never quiet: the change still goes out.
    times = run_loop([(10.0, 1)], until=10.0 + CHANGE_MAX_WAIT_S + 1.0, busy=(10.0, 1e9))
    assert len(times) == 1
    assert 10.0 + CHANGE_MAX_WAIT_S <= times[0] <= 10.5 + CHANGE_MAX_WAIT_S
