"""Receipts written to the ledger in batches, while the process is not computing.

Storing one receipt costs about a millisecond of Python (SQLAlchemy, two signature
checks) and an fsync. Done as each receipt arrives, in a worker thread, that work runs on
the core a session is computing on and holds the GIL its event loop needs: through two
servers on a 2-core machine, 3-5% fewer tokens/s (docs/performance.md). A
`ReceiptWriter` queues receipts instead and stores a batch in one transaction once the
process has been quiet (no inference step, see `Activity`) for `quiet_s`, once the oldest
has waited `max_delay_s`, when `max_batch` are waiting, or when asked to hurry (closing).

Receipts waiting in memory are lost only if the process is killed outright (SIGKILL,
power loss) within `max_delay_s` of receiving them; SIGINT and SIGTERM store them first.
Both parties store every receipt, and the client gossips each session's newest to every
ledger, so what one side loses the other still holds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import trio

from ledger import LedgerStore
from ledger.errors import InvalidReceipt, LedgerError, StoreError
from ledger.receipts import SignedReceipt

log = logging.getLogger(__name__)

QUIET_S = 0.25  # no step for this long: the process is not serving a session right now
MAX_DELAY_S = 10.0  # a receipt waits at most this long for a quiet moment
MAX_BATCH = 256


class Activity:
    """When this process last ran latency-sensitive work (an inference step).

    Use as a context manager around each step; background work asks `quiet_for()`.
    """

    __slots__ = ("_busy", "_last")

    def __init__(self) -> None:
        self._busy = 0
        self._last = -math.inf

    def __enter__(self) -> Activity:
        self._busy += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._busy -= 1
        self._last = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last step ended; 0 while one runs."""
        return 0.0 if self._busy else time.monotonic() - self._last


@dataclass
class _Queued:
    receipt: SignedReceipt
    queued_at: float
    done: trio.Event = field(default_factory=trio.Event)
    added: bool = False
    error: LedgerError | None = None


class ReceiptWriter:
    """Stores receipts in `store` in batches at quiet moments; run `run()` in a nursery
    that outlives every caller of `store()`."""

    def __init__(
        self,
        store: LedgerStore,
        activity: Activity,
        *,
        quiet_s: float = QUIET_S,
        max_delay_s: float = MAX_DELAY_S,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.store = store
        self.activity = activity
        self.quiet_s = quiet_s
        self.max_delay_s = max_delay_s
        self.max_batch = max(1, max_batch)
        self.batches = 0  # transactions written (for reports and tests)
        self._queue: list[_Queued] = []
        self._nudge = trio.Event()
        self._hurry = False
        self._stopped = False
        self._limiter = trio.CapacityLimiter(1)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def store_receipt(self, signed: SignedReceipt) -> bool:
        """Store `signed` (at the next quiet moment); True if new, False if it was stored
        already. Raises what `LedgerStore.add_receipt` raises (`InvalidReceipt` if
        refused). If the caller is cancelled meanwhile, the receipt is stored anyway."""
        if self._stopped:  # run() has ended: store it now
            with trio.CancelScope(shield=True):
                return await trio.to_thread.run_sync(
                    self.store.add_receipt, signed, limiter=self._limiter
                )
        item = _Queued(signed, time.monotonic())
        self._queue.append(item)
        if len(self._queue) == 1 or len(self._queue) >= self.max_batch or self._hurry:
            self._nudge.set()
        await item.done.wait()
        if item.error is not None:
            raise item.error
        return item.added

    def hurry(self) -> None:
        """From now on, store receipts as soon as they arrive (the process is closing)."""
        self._hurry = True
        self._nudge.set()

    async def run(self) -> None:
        """Write batches until cancelled; then write whatever still waits."""
        self._stopped = False
        try:
            while True:
                await self._wait_until_due()
                await self._write_batch()
        finally:
            self._stopped = True
            with trio.CancelScope(shield=True):
                while self._queue:
                    await self._write_batch()

    def _seconds_until_due(self) -> float:
        if not self._queue:
            return math.inf
        if self._hurry or len(self._queue) >= self.max_batch:
            return 0.0
        waited = time.monotonic() - self._queue[0].queued_at
        return max(0.0, min(self.quiet_s - self.activity.quiet_for(), self.max_delay_s - waited))

    async def _wait_until_due(self) -> None:
        while (delay := self._seconds_until_due()) > 0:
            self._nudge = trio.Event()
            with trio.move_on_after(delay):
                await self._nudge.wait()

    async def _write_batch(self) -> None:
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        try:
            result = await trio.to_thread.run_sync(
                self.store.add_receipts, [i.receipt for i in batch], limiter=self._limiter
            )
        except Exception as exc:  # a database failure must not stop the process
            log.warning("could not store %d receipts: %s", len(batch), exc)
            error = exc if isinstance(exc, LedgerError) else StoreError(str(exc))
            for item in batch:
                item.error = error
        else:
            self.batches += 1
            added = set(result.added)
            for rejected in result.rejected:
                batch[rejected.index].error = InvalidReceipt(rejected.reason, rejected.detail)
            for item in batch:
                item.added = item.receipt.receipt_id in added
        for item in batch:
            item.done.set()
