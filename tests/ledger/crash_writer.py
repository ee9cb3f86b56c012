"""Child process of the crash test: writes receipts to a ledger until it is killed.

Usage: python crash_writer.py DATABASE_URL SEED

Prints `ready` once the store is open, then `ack <receipt id hex>` for every receipt only
after `add_receipts` has returned (i.e. after the commit), flushing each batch. Batches mix
new sessions, continuations of a cumulative stream, re-sent duplicates and refused items.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ledger.receipts import SignedReceipt, issue
from ledger.store import LedgerStore
from tests.ledger.helpers import NETWORK, key, make_receipt


def main(url: str, seed: int) -> None:
    rng = random.Random(seed)
    server, client = key(1000 + seed % 4), key(2000 + seed % 4)
    store = LedgerStore(url, NETWORK)
    print("ready", flush=True)
    stream_session = seed.to_bytes(8, "big") + b"\xff" * 8
    seq, amount, n = 0, 0, 0
    previous: list[SignedReceipt] = []
    while True:
        batch: list[SignedReceipt | bytes] = []
        for _ in range(rng.choice([1, 1, 3, 10, 40])):
            n += 1
            if rng.random() < 0.3:
                seq, amount = seq + 1, amount + rng.randrange(0, 5000)
                receipt = make_receipt(
                    server, client, session_id=stream_session, seq=seq, amount=amount
                )
            else:
                session = seed.to_bytes(8, "big") + n.to_bytes(8, "big")
                receipt = make_receipt(server, client, session_id=session, seq=1, amount=n)
            batch.append(issue(receipt, server, client))
        if previous and rng.random() < 0.2:
            batch.extend(previous[:3])  # duplicates: acknowledged again, stored once
        if rng.random() < 0.1:
            batch.append(b"garbage")  # refused, counted
        result = store.add_receipts(batch)
        previous = [item for item in batch if isinstance(item, SignedReceipt)]
        sys.stdout.write("".join(f"ack {rid.hex()}\n" for rid in result.acknowledged))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
