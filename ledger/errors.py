"""The one exception hierarchy of the ledger.

Everything the ledger raises on purpose derives from `LedgerError`. Objects that fail
validation raise a subclass of `InvalidRecord` whose `reason` is a `Reason`, so callers and
rejection counters can tell *why* without parsing messages.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a receipt, fraud proof or audit report was refused. Values are stable: they are
    stored in the rejection counters and printed by `plexus ledger verify --json`."""

    MALFORMED = "malformed"
    """The bytes do not parse: bad magic, wrong length, trailing bytes, bad UTF-8, a field out
    of range, a block span with start > end, ..."""
    UNKNOWN_VERSION = "unknown_version"
    """The encoding's version byte is one this code does not know."""
    WRONG_NETWORK = "wrong_network"
    """Signed for another network id than this ledger's."""
    FORGED_SIGNATURE = "forged_signature"
    """One signature does not verify while the other does: it was made by another key."""
    TAMPERED_FIELD = "tampered_field"
    """No signature verifies: a signed field was changed after signing."""
    REPLAYED = "replayed"
    """The same (server, client, session, sequence number) is stored with different content."""
    CUMULATIVE_DECREASED = "cumulative_decreased"
    """A later sequence number carries a lower cumulative amount (or token count) than an
    earlier receipt of the same session."""
    CHECK_FAILED = "check_failed"
    """A fraud proof whose signatures hold but which the verification layer's checker does
    not confirm as fraud."""


class LedgerError(Exception):
    """Base class of every error the ledger raises deliberately."""


class InvalidRecord(LedgerError):
    """A signed object (receipt, fraud proof, audit report) was refused; see `reason`."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = Reason(reason)
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}" if detail else self.reason.value)


class InvalidReceipt(InvalidRecord):
    """A receipt was refused."""


class InvalidFraudProof(InvalidRecord):
    """A fraud proof was refused."""


class InvalidAudit(InvalidRecord):
    """An audit report was refused."""


class StoreError(LedgerError):
    """The database cannot be opened or used: newer schema, other network, bad URL."""
