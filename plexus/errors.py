"""One exception hierarchy for everything Plexus raises on purpose.

Callers catch `PlexusError` for any failure the library anticipated; subclasses say which
layer failed. Peer-facing errors carry a numeric `code` from docs/protocol.md.
"""

from __future__ import annotations


class PlexusError(Exception):
    """Base class of every error Plexus raises deliberately."""


class ConfigError(PlexusError):
    """A bad option, path, or environment setting supplied by the user."""


class ModelError(PlexusError):
    """A model could not be resolved, loaded or run."""


class UnsupportedModelError(ModelError):
    """The checkpoint's architecture is not one Plexus knows how to split."""


class SessionError(PlexusError):
    """An inference session was used in a way its state does not allow."""


class NetworkError(PlexusError):
    """Talking to another peer failed (connect, handshake, timeout, closed stream)."""


class ProtocolError(NetworkError):
    """A peer sent something that breaks the wire protocol; `code` is from docs/protocol.md."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class RecordError(PlexusError):
    """A DHT record is unsigned, forged, expired, oversized or malformed."""
