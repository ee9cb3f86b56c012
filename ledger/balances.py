"""Balances: a pure function of a set of valid receipts and fraud proofs.

Rules (docs/ledger.md explains why):

1. Receipts form *streams* (server, client, session). Only one receipt per stream counts:
   the one with the highest cumulative `amount`; ties go to the earliest `epoch`, then the
   smallest receipt id (SHA-256 of the body). Its amount is the stream's charge.
2. Self-dealing (server key == client key) mints nothing: such streams are ignored.
3. A server convicted by any fraud proof forfeits every charge it ever earned: its streams
   are voided, so its clients pay nothing for them (credits stay zero-sum).
4. With `scale`, a charge is capped at `units.expected_amount(tokens, span, scale(model))`.
5. Charges settle in the order (epoch, receipt id). A client pays a charge only as far as its
   balance at that point plus `free_lane` allows; the rest is recorded as `unpaid` and never
   credited. So a fresh identity can be made to owe at most `free_lane`, which bounds what a
   colluding server can mint from throw-away client keys. `free_lane=None` disables the cap.

Every credit a server earns is debited from a client: sum(earned) == sum(spent). The result
depends only on the *set* of inputs, never on their order.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ledger.fraud import FraudProof, SignedFraudProof
from ledger.receipts import Receipt, SignedReceipt
from ledger.units import MILLI, expected_amount

DEFAULT_FREE_LANE = 100_000 * MILLI
"""How far (millicredits) a client may run into debt: 100,000 credits, about 3,000 tokens
through all 32 blocks of a Llama-3-8B-sized model."""


@dataclass(frozen=True, slots=True)
class Account:
    """One key's totals in millicredits."""

    earned: int = 0
    """Credited to it as a server."""
    spent: int = 0
    """Debited from it as a client."""
    unpaid: int = 0
    """Charges its clients signed but could not cover (not credited)."""
    forfeited: int = 0
    """Charges voided because a fraud proof convicted it."""

    @property
    def balance(self) -> int:
        return self.earned - self.spent


def _facts(item: Receipt | SignedReceipt) -> tuple[Receipt, bytes]:
    if isinstance(item, SignedReceipt):
        return item.receipt, item.receipt_id
    return item, hashlib.sha256(item.encode()).digest()


def latest_per_stream(
    receipts: Iterable[Receipt | SignedReceipt],
) -> dict[tuple[bytes, bytes, bytes], tuple[Receipt, bytes]]:
    """The counting receipt (and its id) of every stream, self-dealing excluded (rule 1, 2)."""
    best: dict[tuple[bytes, bytes, bytes], tuple[Receipt, bytes]] = {}
    for item in receipts:
        receipt, receipt_id = _facts(item)
        if receipt.server_key == receipt.client_key:
            continue
        current = best.get(receipt.stream)
        if current is None or (-receipt.amount, receipt.epoch, receipt_id) < (
            -current[0].amount,
            current[0].epoch,
            current[1],
        ):
            best[receipt.stream] = (receipt, receipt_id)
    return best


def convicted_keys(fraud_proofs: Iterable[FraudProof | SignedFraudProof]) -> set[bytes]:
    return {(p.proof if isinstance(p, SignedFraudProof) else p).accused_key for p in fraud_proofs}


def compute_balances(
    receipts: Iterable[Receipt | SignedReceipt],
    fraud_proofs: Iterable[FraudProof | SignedFraudProof] = (),
    *,
    free_lane: int | None = DEFAULT_FREE_LANE,
    scale: Callable[[str], int] | None = None,
) -> dict[bytes, Account]:
    """Every key's `Account` (millicredits) from already-validated receipts and fraud proofs.

    `scale(model_id)` returns a model's block scale in thousandths (`units.block_scale_milli`);
    without it the signed amounts are taken as they are.
    """
    convicted = convicted_keys(fraud_proofs)
    streams = latest_per_stream(receipts)
    earned: defaultdict[bytes, int] = defaultdict(int)
    spent: defaultdict[bytes, int] = defaultdict(int)
    unpaid: defaultdict[bytes, int] = defaultdict(int)
    forfeited: defaultdict[bytes, int] = defaultdict(int)
    for receipt, _ in sorted(streams.values(), key=lambda item: (item[0].epoch, item[1])):
        charge = receipt.amount
        if scale is not None:
            cap = expected_amount(
                receipt.tokens, receipt.block_start, receipt.block_end, scale(receipt.model_id)
            )
            charge = min(charge, cap)
        server, client = receipt.server_key, receipt.client_key
        if server in convicted:
            forfeited[server] += charge
            continue
        pay = charge
        if free_lane is not None:
            pay = min(charge, max(0, earned[client] - spent[client] + free_lane))
        earned[server] += pay
        spent[client] += pay
        unpaid[server] += charge - pay
    keys = set(earned) | set(spent) | set(unpaid) | set(forfeited)
    return {
        key: Account(earned[key], spent[key], unpaid[key], forfeited[key]) for key in sorted(keys)
    }
