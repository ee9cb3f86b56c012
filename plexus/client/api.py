"""The Python library: connect to a swarm, generate, stream, chat, inspect routes.

    async with AsyncClient.connect("plexus-tiny", initial_peers=[addr]) as client:
        result = await client.generate("Hello", max_new_tokens=20)
        print(result.text, result.route)

`Client` is the same API for plain scripts and notebooks (no `await`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
import trio

from ledger import LedgerStore
from ledger.engine import sqlite_url
from plexus.client.audit import Auditor, HeldOutput
from plexus.client.generation import Generation, generate_tokens
from plexus.client.idle_work import IdleWorkTrial
from plexus.client.inference import InferenceSession
from plexus.client.pool import ConnectionPool
from plexus.client.sampling import SamplingParams
from plexus.client.swarm import SwarmView
from plexus.errors import ConfigError, NetworkError
from plexus.identity import Identity
from plexus.models import ClientHead, load_head, open_model
from plexus.models.resolve import ModelFiles
from plexus.p2p.dataplane import Limits
from plexus.p2p.dht import DHTNode
from plexus.p2p.ledger_gossip import LedgerGossip
from plexus.paths import default_data_dir
from plexus.receipt_writer import Activity, ReceiptWriter
from plexus.verification import NETWORK_ID
from plexus.verification.proofs import check_fraud_proof

log = logging.getLogger(__name__)

Messages = Sequence[dict[str, str]]
DEFAULT_MAX_LENGTH = 2048
MAX_RECOMPUTE = 3  # times a request is recomputed after failed audits before giving up


class VerificationError(NetworkError):
    """A server failed an audit and the results could not be recomputed elsewhere."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class AsyncClient:
    """A connection to a swarm serving one model. Create with `AsyncClient.connect`."""

    def __init__(
        self,
        files: ModelFiles,
        head: ClientHead,
        tokenizer: Any,
        swarm: SwarmView,
        auditor: Auditor | None = None,
        forwarding: bool = True,
    ) -> None:
        self.auditor = auditor  # commitments, audits, receipts (plexus.client.audit)
        self.forwarding = forwarding  # servers pass hidden states to the next server
        self.files = files
        self.head = head
        # Whether reading the LM head into the cache while waiting pays on this machine.
        self.prefetch_trial = IdleWorkTrial("LM head prefetch")
        self.tokenizer = tokenizer
        self.swarm = swarm
        self.last_route: list[dict[str, object]] = []
        self._live_sessions: list[InferenceSession] = []

    def swarm_route(self) -> list[dict[str, object]]:
        """The route of the generation in progress (or of the last one)."""
        return self._live_sessions[-1].route if self._live_sessions else self.last_route

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        model: str = "plexus-tiny",
        *,
        initial_peers: Sequence[str] = (),
        data_dir: str | Path | None = None,
        identity_file: str | Path | None = None,
        listen_host: str = "127.0.0.1",
        block_servers: Sequence[str] = (),
        verify: bool = True,
        forwarding: bool = True,
        emulate_latency: tuple[float, float] = (0.0, 0.0),
    ) -> AsyncIterator[AsyncClient]:
        """Join the swarm through `initial_peers` and load the model's head and tokenizer.

        `block_servers` are peer ids never to route through. With `verify` (the default)
        every reply's commitment is checked, servers are audited, receipts countersigned,
        and the ledger kept at DATA_DIR/ledger.sqlite (docs/verification.md).
        With `forwarding` (the default) each server sends its output straight to the next
        server of the route; without it the client relays every hop's output itself.
        `emulate_latency` (testing only) holds every data-plane message this client sends
        for (delay, jitter) seconds."""
        if not initial_peers:
            raise ConfigError("initial_peers is empty: give at least one peer's multiaddr")
        data = Path(data_dir) if data_dir else default_data_dir()
        identity = Identity.load_or_create(
            Path(identity_file) if identity_file else data / "identity.key"
        )
        files = open_model(model, data)
        head = await trio.to_thread.run_sync(lambda: load_head(files, progress=False))
        tokenizer = await trio.to_thread.run_sync(lambda: load_tokenizer(files))
        if tokenizer is None:
            log.warning("%s has no tokenizer: only token-id generation is available", model)
        async with (
            DHTNode.open(identity, listen_host, 0, list(initial_peers)) as node,
            ConnectionPool.open(
                identity,
                Limits(emulated_delay=emulate_latency[0], emulated_jitter=emulate_latency[1]),
            ) as pool,
        ):
            swarm = SwarmView(node, pool, files.model_id)
            swarm.blocked.update(block_servers)
            if not verify:
                yield cls(files, head, tokenizer, swarm, forwarding=forwarding)
                return
            store = await trio.to_thread.run_sync(lambda: open_ledger(data))
            writer = ReceiptWriter(store, Activity())  # receipts wait for a quiet moment
            try:
                async with trio.open_nursery() as writing:
                    writing.start_soon(writer.run)
                    async with (
                        LedgerGossip.open(node.host, store, check_fraud_proof) as gossip,
                        trio.open_nursery() as background,  # closes after its receipts are kept
                    ):
                        auditor = Auditor(
                            identity,
                            swarm,
                            store,
                            publish=gossip.publish,
                            background=background,
                            writer=writer,
                        )
                        try:
                            yield cls(files, head, tokenizer, swarm, auditor, forwarding=forwarding)
                        finally:
                            # Receipts still waiting are stored now, and gossiped before
                            # the mesh closes.
                            writer.hurry()
                            background.start_soon(auditor.flush_gossip, True)
                    writing.cancel_scope.cancel()
            finally:
                store.close()

    # -- building prompts ----------------------------------------------------------------
    def encode(self, prompt: str | None = None, messages: Messages | None = None) -> torch.Tensor:
        """Token ids [1, T] of a plain prompt, or of chat messages via the chat template."""
        if (prompt is None) == (messages is None):
            raise ConfigError("give exactly one of prompt or messages")
        if self.tokenizer is None:
            raise ConfigError(f"{self.files.ref} has no tokenizer; use generate_ids()")
        if messages is not None:
            text = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=False
            )
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
        else:
            ids = self.tokenizer(prompt).input_ids
        if not ids:
            raise ConfigError("the prompt is empty")
        return torch.tensor([ids], dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.files.config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    # -- generating ------------------------------------------------------------------------
    async def open_session(self, max_length: int = DEFAULT_MAX_LENGTH) -> InferenceSession:
        session = InferenceSession(
            self.swarm,
            self.files.config.num_hidden_layers,
            self.files.config.hidden_size,
            max_length,
            auditor=self.auditor,
            forwarding=self.forwarding,
        )
        await session.open()
        return session

    async def generate(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        on_text: Callable[[str], object] | None = None,
        on_token: Callable[[int], object] | None = None,
    ) -> Generation:
        """Generate a completion of `prompt`, or an assistant reply to chat `messages`."""
        return await self.generate_ids(
            self.encode(prompt, messages),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
            stop=stop,
            on_text=on_text,
            on_token=on_token,
        )

    async def generate_ids(
        self,
        input_ids: torch.Tensor | Sequence[int],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        on_text: Callable[[str], object] | None = None,
        on_token: Callable[[int], object] | None = None,
        session: InferenceSession | None = None,
        eos: bool = True,
    ) -> Generation:
        """Generate after token ids (no tokenizer needed). `session`: an open session to
        use (and leave open); `eos=False` ignores end-of-sequence tokens."""
        if max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be at least 1")
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
        own_session = session is None
        for attempt in range(MAX_RECOMPUTE + 1):
            if own_session:
                session = await self.open_session(ids.shape[1] + max_new_tokens)
            assert session is not None
            held = HeldOutput(on_text, on_token, partial(self._must_hold, session))
            self._live_sessions.append(session)
            try:
                result = await generate_tokens(
                    session,
                    self.head,
                    ids,
                    max_new_tokens=max_new_tokens,
                    sampling=SamplingParams(temperature, top_k, top_p, repetition_penalty, seed),
                    eos_token_ids=self.eos_token_ids if eos else (),
                    decode=self.decode if self.tokenizer is not None else None,
                    stop=stop,
                    on_text=held.on_text,
                    on_token=held.on_token,
                    prefetch_trial=self.prefetch_trial,
                )
                # Audits are decided now, after every server committed to its results.
                verified = await session.audit()
            finally:
                self._live_sessions.remove(session)
                if own_session:
                    with trio.CancelScope(shield=True):
                        await session.close()
            if verified:
                held.release()
                break
            held.discard()
            if not own_session or attempt == MAX_RECOMPUTE:
                raise VerificationError("a server on the route failed an audit")
            log.warning("a server failed an audit: recomputing the request on other servers")
        result.extra["recomputed"] = attempt
        self.last_route = result.route
        return result

    def _must_hold(self, session: InferenceSession) -> bool:
        return self.auditor is not None and self.auditor.must_hold(session.hops)

    async def stream(self, prompt: str | None = None, **kwargs: Any) -> AsyncIterator[str]:
        """Yield the completion text piece by piece as tokens arrive."""
        send, receive = trio.open_memory_channel[str | None](1000)

        async def produce() -> None:
            async with send:
                await self.generate(prompt, on_text=send.send_nowait, **kwargs)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with receive:
                async for piece in receive:
                    if piece:
                        yield piece

    def chat(self, system: str | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> AsyncChat:
        """A multi-turn conversation that keeps its servers' caches between turns."""
        return AsyncChat(self, system, max_length)


class AsyncChat:
    """Multi-turn chat. Each turn sends the servers only tokens they have not seen."""

    def __init__(self, client: AsyncClient, system: str | None, max_length: int) -> None:
        self.client = client
        self.max_length = max_length
        self.messages: list[dict[str, str]] = (
            [{"role": "system", "content": system}] if system else []
        )
        self._session: InferenceSession | None = None
        self._fed: list[int] = []  # token ids in the servers' caches

    async def send(self, text: str, **kwargs: Any) -> Generation:
        """Add a user message and generate the assistant's reply.

        If a server fails an audit, the turn is recomputed from scratch on other servers
        (the whole conversation is fed again)."""
        for attempt in range(MAX_RECOMPUTE + 1):
            if self._session is None:
                self._session = await self.client.open_session(self.max_length)
            held = HeldOutput(
                kwargs.get("on_text"),
                kwargs.get("on_token"),
                partial(self.client._must_hold, self._session),
            )
            result = await self._send(
                text, **{**kwargs, "on_text": held.on_text, "on_token": held.on_token}
            )
            assert self._session is not None
            if await self._session.audit():
                held.release()
                self.messages.append({"role": "assistant", "content": result.text})
                result.extra["recomputed"] = attempt
                return result
            held.discard()
            log.warning("a server failed an audit: recomputing this turn on other servers")
            self.messages.pop()
            with trio.CancelScope(shield=True):
                await self._session.close()
            self._session, self._fed = None, []
        raise VerificationError("servers kept failing audits")

    async def _send(self, text: str, **kwargs: Any) -> Generation:
        self.messages.append({"role": "user", "content": text})
        ids = self.client.encode(messages=self.messages)[0].tolist()
        max_new = int(kwargs.get("max_new_tokens", 64))
        if len(ids) + max_new > self.max_length:
            raise ConfigError(
                f"conversation would reach {len(ids) + max_new} tokens; this chat holds "
                f"{self.max_length} (start a new one with reset())"
            )
        if self._session is None:
            self._session = await self.client.open_session(self.max_length)
        common = 0
        while common < min(len(ids), len(self._fed)) and ids[common] == self._fed[common]:
            common += 1
        if common == len(ids):
            common -= 1  # something new must be fed to get logits
        if common < self._session.length:
            await self._session.rollback(common)
        new_ids = torch.tensor([ids[common:]], dtype=torch.long)
        result = await generate_tokens(
            self._session,
            self.client.head,
            new_ids,
            max_new_tokens=max_new,
            sampling=SamplingParams(
                kwargs.get("temperature", 0.0),
                kwargs.get("top_k", 0),
                kwargs.get("top_p", 1.0),
                kwargs.get("repetition_penalty", 1.0),
                kwargs.get("seed"),
            ),
            eos_token_ids=self.client.eos_token_ids,
            decode=self.client.decode,
            stop=kwargs.get("stop", ()),
            on_text=kwargs.get("on_text"),
            on_token=kwargs.get("on_token"),
            history_ids=torch.tensor([ids[:common]], dtype=torch.long),
            prefetch_trial=self.client.prefetch_trial,
        )
        # The cache holds the prompt and every generated token but the last one.
        self._fed = (ids + result.token_ids)[: self._session.length]
        self.client.last_route = result.route
        return result

    async def reset(self) -> None:
        """Forget the conversation (keeps the system message) and free the caches."""
        self.messages = [m for m in self.messages if m["role"] == "system"]
        if self._session is not None:
            await self._session.close()
        self._session, self._fed = None, []

    async def aclose(self) -> None:
        if self._session is not None:
            with trio.CancelScope(shield=True):
                await self._session.close()
            self._session = None


def open_ledger(data_dir: Path) -> LedgerStore:
    """This peer's ledger: DATA_DIR/ledger.sqlite."""
    return LedgerStore(sqlite_url(Path(data_dir) / "ledger.sqlite"), NETWORK_ID)


def load_tokenizer(files: ModelFiles) -> Any | None:
    """The model's tokenizer, or None when its folder has none."""
    from transformers import AutoTokenizer

    if files.repo_id:
        from huggingface_hub import snapshot_download

        snapshot_download(
            files.repo_id,
            revision=files.revision,
            allow_patterns=[
                "tokenizer*",
                "special_tokens_map.json",
                "*.model",
                "chat_template*",
                "generation_config.json",
                "vocab*",
                "merges.txt",
            ],
        )
    if not any((files.folder / name).exists() for name in TOKENIZER_FILES):
        return None
    return AutoTokenizer.from_pretrained(files.folder)


__all__ = ["AsyncChat", "AsyncClient", "Generation", "NetworkError", "VerificationError"]
