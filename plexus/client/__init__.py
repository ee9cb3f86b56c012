"""Client side: planning routes, running sessions through servers, generating text."""

from plexus.client.api import AsyncChat, AsyncClient
from plexus.client.generation import Generation
from plexus.client.inference import InferenceSession, RouteError
from plexus.client.planner import MissingBlocksError, Route, ServerInfo, plan_route
from plexus.client.sampling import SamplingParams
from plexus.client.sync import Chat, Client

__all__ = [
    "AsyncChat",
    "AsyncClient",
    "Chat",
    "Client",
    "Generation",
    "InferenceSession",
    "MissingBlocksError",
    "Route",
    "RouteError",
    "SamplingParams",
    "ServerInfo",
    "plan_route",
]
