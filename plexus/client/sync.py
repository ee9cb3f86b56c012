"""`Client`: the async API for code that does not use trio (scripts, notebooks).

A background thread runs a trio loop that owns the swarm connection; each method call
is handed to it and waits for the answer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from plexus.client.api import AsyncChat, AsyncClient
from plexus.client.generation import Generation

T = TypeVar("T")
_DONE = object()


class Client:
    """Synchronous client. Use as a context manager, or call `close()`.

    >>> with Client("plexus-tiny", initial_peers=[addr]) as client:
    ...     print(client.generate("Hello", max_new_tokens=10).text)
    """

    def __init__(
        self,
        model: str = "plexus-tiny",
        *,
        initial_peers: Sequence[str] = (),
        data_dir: str | Path | None = None,
        identity_file: str | Path | None = None,
        **options: Any,
    ) -> None:
        """`options` are those of `AsyncClient.connect` (verify, forwarding, ...)."""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._client: AsyncClient | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(
            target=trio.run,
            args=(self._main, model, tuple(initial_peers), data_dir, identity_file, options),
            name="plexus-client",
            daemon=True,
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    async def _main(
        self,
        model: str,
        peers: tuple[str, ...],
        data_dir: Any,
        identity: Any,
        options: dict[str, Any],
    ) -> None:
        try:
            async with AsyncClient.connect(
                model, initial_peers=peers, data_dir=data_dir, identity_file=identity, **options
            ) as client:
                self._client = client
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # handed to the constructor's caller
            if self._ready.is_set():
                raise
            self._error = exc
            self._ready.set()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._token is None:
            raise RuntimeError("client is closed")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    @property
    def async_client(self) -> AsyncClient:
        assert self._client is not None
        return self._client

    @property
    def last_route(self) -> list[dict[str, object]]:
        return self.async_client.last_route

    def generate(self, prompt: str | None = None, **kwargs: Any) -> Generation:
        """See `AsyncClient.generate`."""
        return self._call(lambda: self.async_client.generate(prompt, **kwargs))

    def stream(self, prompt: str | None = None, **kwargs: Any) -> Iterator[str]:
        """Yield text pieces as they are generated."""
        pieces: queue.Queue[object] = queue.Queue()

        async def run() -> None:
            try:
                await self.async_client.generate(prompt, on_text=pieces.put, **kwargs)
            finally:
                pieces.put(_DONE)

        failure: list[BaseException] = []

        def worker() -> None:
            try:
                self._call(run)
            except BaseException as exc:  # re-raised in the consumer's thread
                failure.append(exc)
                pieces.put(_DONE)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        while (item := pieces.get()) is not _DONE:
            yield str(item)
        thread.join()
        if failure:
            raise failure[0]

    def chat(self, system: str | None = None) -> Chat:
        return Chat(self, self.async_client.chat(system))

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._token = None
        self._thread.join(timeout=30)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Chat:
    """Synchronous multi-turn chat; see `AsyncChat`."""

    def __init__(self, client: Client, chat: AsyncChat) -> None:
        self._client, self._chat = client, chat

    @property
    def messages(self) -> list[dict[str, str]]:
        return self._chat.messages

    def send(self, text: str, **kwargs: Any) -> Generation:
        return self._client._call(lambda: self._chat.send(text, **kwargs))

    def reset(self) -> None:
        self._client._call(self._chat.reset)

    def close(self) -> None:
        self._client._call(self._chat.aclose)
