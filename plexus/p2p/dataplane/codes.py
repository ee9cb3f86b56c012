"""Numeric error codes carried by data-plane `_error` messages (docs/protocol.md, Part 2).

Ranges:
  1-99     the data plane itself (this module)
  100-199  reserved for the block server (unknown session, span mismatch, cache exhausted, ...)
  200-299  reserved for later subsystems (verification, ledger)
  1000+    free for experiments; never assigned by Plexus
"""

from __future__ import annotations

from enum import IntEnum

DATAPLANE_RANGE = range(1, 100)
BLOCK_SERVER_RANGE = range(100, 200)
RESERVED_RANGE = range(200, 300)


class ErrorCode(IntEnum):
    """Codes defined by the data plane. Handlers may send any code from the other ranges."""

    MALFORMED = 1
    """A frame or message header could not be parsed (bad JSON, bad field types, bad padding)."""
    UNSUPPORTED_VERSION = 2
    """The peer speaks a protocol version this side does not."""
    UNKNOWN_TYPE = 3
    """No handler for the message type, or an unknown message kind."""
    TOO_LARGE = 4
    """A frame, header, message or tensor exceeds the receiver's limits."""
    BAD_TENSOR = 5
    """A tensor descriptor is invalid: dtype not allowed, shape/nbytes mismatch, bad values."""
    INTERNAL = 6
    """The handler failed unexpectedly; the message says no more than the exception type."""
    BUSY = 7
    """Too many requests in flight on this connection, or too many connections."""
    TIMEOUT = 8
    """The handler did not answer within the server's handler timeout."""
    INVALID_REQUEST = 9
    """The request is well-formed but its fields are wrong for its type."""
    UNAUTHORIZED = 10
    """The authenticated peer is not allowed to make this request."""
    SHUTTING_DOWN = 11
    """The server is closing; retry elsewhere."""


def code_name(code: int) -> str:
    """A readable name for `code`, for logs and error messages."""
    try:
        return ErrorCode(code).name
    except ValueError:
        if code in BLOCK_SERVER_RANGE:
            return f"BLOCK_SERVER_{code}"
        return f"CODE_{code}"
