"""Dispatch requests to one async function per message type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

from plexus.errors import ProtocolError
from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.message import Message

Route = Callable[[str, Message], Awaitable[Message | None]]
InlineTest: TypeAlias = Callable[[Message], bool]


class Router:
    """A `Handler` that calls the function registered for the message's type.

    >>> router = Router()
    >>> @router.route("echo")
    ... async def echo(peer_id: str, message: Message) -> Message:
    ...     return Message("echo", message.fields, message.tensors)
    """

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self.inline_types: set[str] = set()  # see `route`
        self._inline_when: dict[str, InlineTest] = {}

    def route(
        self, message_type: str, inline: bool | InlineTest = False
    ) -> Callable[[Route], Route]:
        """Register the handler of `message_type`. `inline`: the handler never waits (no
        I/O, no locks, no sleeping), so the connection runs it in its reader, without
        starting a task for it: one scheduler pass less on a latency-critical path. A
        function instead of True decides per message (it must be cheap): True for the
        messages whose handling will not wait."""
        if message_type.startswith("_"):
            raise ValueError("types starting with '_' are reserved for the data plane")

        def register(function: Route) -> Route:
            if message_type in self._routes:
                raise ValueError(f"a route for {message_type!r} exists already")
            self._routes[message_type] = function
            if callable(inline):
                self._inline_when[message_type] = inline
            elif inline:
                self.inline_types.add(message_type)
            return function

        return register

    def runs_inline(self, message: Message) -> bool:
        """Whether the connection should run this message's handler in its reader."""
        if message.type in self.inline_types:
            return True
        test = self._inline_when.get(message.type)
        return test is not None and test(message)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._routes)

    async def __call__(self, peer_id: str, message: Message) -> Message | None:
        function = self._routes.get(message.type)
        if function is None:
            raise ProtocolError(f"unknown message type {message.type!r}", ErrorCode.UNKNOWN_TYPE)
        return await function(peer_id, message)
