"""Errors a block server answers clients with; codes 100-199 of docs/protocol.md."""

from __future__ import annotations

from enum import IntEnum

from plexus.errors import ProtocolError


class ServerCode(IntEnum):
    UNKNOWN_SESSION = 100  # no such session, it expired, or it belongs to another peer
    SPAN_MISMATCH = 101  # the requested blocks are not (all) served here
    CACHE_EXHAUSTED = 102  # the KV-cache budget cannot hold the requested session
    TOO_MANY_SESSIONS = 103  # --max-sessions reached
    MALFORMED_REQUEST = 104  # fields or tensors of the wrong type, shape or size
    WRONG_MODEL = 105  # the request names a different model id
    SESSION_FULL = 106  # a step would exceed the session's declared max_length
    UPSTREAM_TIMEOUT = 107  # a step waiting for forwarded input got none in time
    SUPERSEDED = 108  # a step waiting for forwarded input was replaced by a newer request


class ServerError(ProtocolError):
    """An error with a `ServerCode`, sent back to the client as a data-plane error."""

    def __init__(self, code: ServerCode, message: str) -> None:
        super().__init__(message, int(code))
        self.server_code = code
