"""Plexus: run large language models over a volunteer swarm of GPUs and CPUs."""

from plexus.errors import (
    ConfigError,
    ModelError,
    NetworkError,
    PlexusError,
    ProtocolError,
    RecordError,
    SessionError,
    UnsupportedModelError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ModelError",
    "NetworkError",
    "PlexusError",
    "ProtocolError",
    "RecordError",
    "SessionError",
    "UnsupportedModelError",
    "__version__",
]
