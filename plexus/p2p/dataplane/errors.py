"""Exceptions specific to the data plane, all under `plexus.errors.NetworkError`."""

from __future__ import annotations

from plexus.errors import NetworkError, ProtocolError
from plexus.p2p.dataplane.codes import ErrorCode, code_name


class HandshakeError(NetworkError):
    """The authenticated handshake failed: wrong peer, bad signature, timeout, bad bytes."""


class ConnectionClosed(NetworkError):
    """The connection ended (peer closed it, it broke, or this side closed it)."""


class RequestTimeout(NetworkError):
    """No reply arrived within the request's timeout."""


class WireError(ProtocolError):
    """Something received breaks the protocol; `code` is what to answer the peer with.

    `fatal` errors leave the byte stream unusable (a bad frame), so the connection must
    close after answering; others (a bad header, a bad tensor) concern one message only.
    """

    def __init__(
        self,
        message: str,
        code: int = ErrorCode.MALFORMED,
        *,
        fatal: bool = False,
        request_id: int = 0,
    ) -> None:
        super().__init__(message, int(code))
        self.fatal = fatal
        self.request_id = request_id


class RemoteError(ProtocolError):
    """The peer answered a request with an `_error` message."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(f"{code_name(code)} ({code}): {message}", code)
        self.remote_message = message
