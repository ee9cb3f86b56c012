"""Commitments that follow their step's reply (`split` steps, docs/protocol.md Part 4).

The last server of a chain may answer a step with its output at once and compute the
commitment right after, while the client computes its next token's logits; the client
collects the commitment with its next step (`previous`) or with a `commitment` request.
One box per session holds the latest such commitment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from plexus.server.backend import ServerSession
from plexus.server.errors import ServerCode, ServerError


class CommitmentBox:
    def __init__(self) -> None:
        self.length = -1  # cache length after the step the commitment is for
        self._make: Callable[[], dict[str, Any]] | None = None
        self._fields: dict[str, Any] | None = None
        self._error: str | None = None
        self._done = trio.Event()
        self._done.set()
        self._posted = trio.Event()

    def post(self, length: int, make: Callable[[], dict[str, Any]]) -> None:
        """A step ending at `length` will have its commitment computed by `make`."""
        self.length, self._make = length, make
        self._fields, self._error = None, None
        self._done = trio.Event()
        self._posted.set()
        self._posted = trio.Event()

    async def compute(self) -> None:
        make, self._make = self._make, None
        try:
            if make is not None:
                self._fields = make()
        except Exception as exc:  # reported to whoever asks for it, never fatal
            self._error = f"commitment failed: {type(exc).__name__}"
        finally:
            self._done.set()

    def reset(self) -> None:
        """Forget the last commitment (the session was rolled back)."""
        self.length, self._fields, self._error = -1, None, None

    async def settled(self) -> None:
        """Until the commitment being computed (if any) is done."""
        await self._done.wait()

    def collect(self, length: int) -> dict[str, Any]:
        """The fields of the settled commitment for the step ending at `length` (for a
        step carrying `previous`: the box settled before the step began)."""
        if self.length != length or not self._done.is_set():
            raise ServerError(
                ServerCode.MALFORMED_REQUEST, f"no split step ended at length {length}"
            )
        if self._error is not None or self._fields is None:
            raise ServerError(ServerCode.MALFORMED_REQUEST, self._error or "no commitment")
        return self._fields

    async def get(self, length: int, wait_s: float) -> dict[str, Any]:
        """The fields of the commitment for the step ending at `length`."""
        with trio.move_on_after(wait_s):
            while self.length != length:
                await self._posted.wait()
            await self._done.wait()
        return self.collect(length)


def commitments_of(session: ServerSession) -> CommitmentBox:
    if session.commitments is None:
        session.commitments = CommitmentBox()
    return session.commitments  # type: ignore[no-any-return]
