"""Client side: planning routes, running sessions through servers, generating text.

Names are imported on first use, so that `plexus.client.planner` (a pure function the
simulator uses) does not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AsyncChat": "plexus.client.api",
    "AsyncClient": "plexus.client.api",
    "Chat": "plexus.client.sync",
    "Client": "plexus.client.sync",
    "Generation": "plexus.client.generation",
    "InferenceSession": "plexus.client.inference",
    "RouteError": "plexus.client.inference",
    "MissingBlocksError": "plexus.client.planner",
    "Route": "plexus.client.planner",
    "ServerInfo": "plexus.client.planner",
    "plan_route": "plexus.client.planner",
    "SamplingParams": "plexus.client.sampling",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'plexus.client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
