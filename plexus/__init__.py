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


def __getattr__(name: str) -> object:
    # The client pulls in torch and libp2p: import it only when it is asked for.
    if name in (
        "AsyncClient",
        "Client",
        "AsyncChat",
        "Chat",
        "Generation",
        "SamplingParams",
        "MissingBlocksError",
        "RouteError",
    ):
        import plexus.client

        return getattr(plexus.client, name)
    raise AttributeError(f"module 'plexus' has no attribute {name!r}")


__all__ = [  # noqa: RUF022  (the client names are loaded lazily)
    "AsyncChat",
    "AsyncClient",
    "Chat",
    "Client",
    "Generation",
    "MissingBlocksError",
    "RouteError",
    "SamplingParams",
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
