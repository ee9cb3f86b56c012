"""The unit of account.

One **credit** is the work of running one *reference-size* transformer block on one token
(prompt and generated tokens cost the same). The reference block is one decoder layer of
Llama-3-8B: 218,112,000 parameters (attention 41,943,040 + MLP 176,160,768 + norms 8,192).
A model's blocks are weighted by their size relative to it: its *block scale*.

Amounts are integers in **millicredits** (1 credit = 1000) so that all arithmetic is exact
and every ledger computes the same numbers. The block scale is likewise an integer in
thousandths (`scale_milli`, 1000 for a reference-size block), so:

    amount (millicredits) = tokens x blocks x scale_milli

e.g. 100 tokens through 32 blocks of Llama-3-8B cost 100 x 32 x 1000 = 3,200,000 millicredits
= 3,200 credits. Receipts carry the amount both sides signed; `expected_amount` is how a server
computes it and how `balances.compute_balances(scale=...)` caps what a receipt can claim.
"""

from __future__ import annotations

MILLI = 1000
REFERENCE_BLOCK_PARAMS = 218_112_000


def block_scale_milli(params_per_block: int) -> int:
    """A model's block scale in thousandths: its parameters per block relative to the
    reference block, rounded to the nearest thousandth (at least 1)."""
    if params_per_block <= 0:
        raise ValueError("params_per_block must be positive")
    half = REFERENCE_BLOCK_PARAMS // 2
    return max(1, (params_per_block * MILLI + half) // REFERENCE_BLOCK_PARAMS)


def expected_amount(tokens: int, block_start: int, block_end: int, scale_milli: int) -> int:
    """Millicredits for `tokens` tokens through blocks `block_start..block_end` (inclusive)."""
    if tokens < 0 or block_end < block_start or scale_milli < 0:
        raise ValueError("tokens and scale must be >= 0 and block_end >= block_start")
    return tokens * (block_end - block_start + 1) * scale_milli


def credits(millicredits: int) -> float:
    """For display only: millicredits as credits."""
    return millicredits / MILLI
