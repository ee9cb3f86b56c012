"""Priority by balance: a busy server serves clients that contributed more first.

`BalanceBook` keeps every client's balance as the server's own ledger computes it
(`LedgerStore.balances`, refreshed in a worker thread every `REFRESH_S`), and is plugged
into `SpanBackend.priority`. Clients with nothing (balance <= 0, e.g. newcomers) are
served in the free lane: behind paying clients when the server is busy, but with a
guaranteed share of the device (`backend.FREE_LANE_EVERY`), so they can start earning.
"""

from __future__ import annotations

import logging

import trio

from ledger import LedgerStore
from ledger.errors import LedgerError
from plexus.identity import public_key_of

log = logging.getLogger(__name__)

REFRESH_S = 10.0


class BalanceBook:
    """peer id -> balance in millicredits, from the server's ledger."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._balances: dict[bytes, int] = {}
        self._keys: dict[str, bytes] = {}

    def __call__(self, peer_id: str) -> float:
        key = self._keys.get(peer_id)
        if key is None:
            try:
                key = public_key_of(peer_id)
            except ValueError:
                key = b""
            if len(self._keys) < 100_000:
                self._keys[peer_id] = key
        return float(self._balances.get(key, 0))

    def refresh_now(self) -> None:
        accounts = self.store.balances()
        self._balances = {key: account.balance for key, account in accounts.items()}

    async def refresh_forever(self, period: float = REFRESH_S) -> None:
        while True:
            try:
                await trio.to_thread.run_sync(self.refresh_now)
            except LedgerError as exc:
                log.warning("could not read balances: %s", exc)
            await trio.sleep(period)
