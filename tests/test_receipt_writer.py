"""ReceiptWriter: receipts wait for a quiet moment, then go to a real SQLite ledger in
one transaction; refusals, the delay bound and cancellation behave as documented."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from ledger import LedgerStore
from ledger.engine import sqlite_url
from ledger.errors import InvalidReceipt
from plexus.receipt_writer import Activity, ReceiptWriter
from tests.ledger.helpers import NETWORK, issue_receipt, key

SERVER, CLIENT = key(1), key(2)


def open_store(tmp_path: Path) -> LedgerStore:
    return LedgerStore(sqlite_url(tmp_path / "ledger.sqlite"), NETWORK)


def stored(store: LedgerStore) -> int:
    return len(store.receipt_ids())


async def test_receipts_wait_until_no_step_runs_then_go_in_one_batch(tmp_path: Path) -> None:
    store, activity = open_store(tmp_path), Activity()
    writer = ReceiptWriter(store, activity, quiet_s=0.1, max_delay_s=30.0)
    results: list[bool] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        with activity:  # a step is running
            for seq in (1, 2, 3):
                signed = issue_receipt(SERVER, CLIENT, seq=seq)
                nursery.start_soon(lambda s=signed: _keep(writer, s, results))
            await trio.sleep(0.5)
            assert stored(store) == 0 and writer.waiting == 3
        started = time.monotonic()
        while len(results) < 3:
            await trio.sleep(0.01)
        assert time.monotonic() - started >= 0.09  # quiet for quiet_s first
        assert results == [True, True, True] and writer.batches == 1
        assert stored(store) == 3
        assert await writer.store_receipt(issue_receipt(SERVER, CLIENT, seq=1)) is False
        nursery.cancel_scope.cancel()


async def _keep(writer: ReceiptWriter, signed: object, results: list[bool]) -> None:
    results.append(await writer.store_receipt(signed))  # type: ignore[arg-type]


async def test_a_refused_receipt_raises_and_the_rest_of_its_batch_is_stored(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path)
    writer = ReceiptWriter(store, Activity(), quiet_s=0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        assert await writer.store_receipt(issue_receipt(SERVER, CLIENT, seq=1))
        other = issue_receipt(SERVER, CLIENT, seq=1, amount=1)  # same seq, other content
        with pytest.raises(InvalidReceipt, match="seq 1"):
            await writer.store_receipt(other)
        assert await writer.store_receipt(issue_receipt(SERVER, CLIENT, seq=2))
        assert stored(store) == 2
        nursery.cancel_scope.cancel()


async def test_a_busy_process_still_writes_after_max_delay(tmp_path: Path) -> None:
    store, activity = open_store(tmp_path), Activity()
    writer = ReceiptWriter(store, activity, quiet_s=0.1, max_delay_s=0.4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        with activity:  # never quiet
            started = time.monotonic()
            assert await writer.store_receipt(issue_receipt(SERVER, CLIENT, seq=1))
            assert 0.35 <= time.monotonic() - started < 5.0
        nursery.cancel_scope.cancel()


async def test_stopping_the_writer_stores_what_waits_and_hurry_skips_the_wait(
    tmp_path: Path,
) -> None:
    store, activity = open_store(tmp_path), Activity()
    writer = ReceiptWriter(store, activity, quiet_s=0.1, max_delay_s=30.0)
    with activity:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(writer.store_receipt, issue_receipt(SERVER, CLIENT, seq=1))
            await trio.sleep(0.2)
            assert stored(store) == 0
            nursery.cancel_scope.cancel()  # the waiting caller is cancelled too
        assert stored(store) == 1
        # Not running: stored at once. Running and hurried: no wait for quiet either.
        assert await writer.store_receipt(issue_receipt(SERVER, CLIENT, seq=2))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await trio.sleep(0)
            writer.hurry()
            with trio.fail_after(5):
                assert await writer.store_receipt(issue_receipt(SERVER, CLIENT, seq=3))
            nursery.cancel_scope.cancel()
    assert stored(store) == 3
