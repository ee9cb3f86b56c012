"""Gossip of receipts and fraud proofs between peers that keep a ledger (libp2p gossipsub).

Runs on the host of a peer's `DHTNode` (no new connections of its own: it uses the ones
the DHT opens, on the addresses the peer was given). Every message is validated *before*
it is stored or relayed: the topic validator hands it to the peer's `LedgerStore`
(receipts: strict parsing, network, both signatures, replay and cumulative checks;
fraud proofs: structure, signatures and the verification layer's checker). Refused
messages are neither stored nor forwarded, and the store counts them by reason
(`plexus ledger verify` prints the counts).

Topics (message data = the object's canonical bytes, docs/ledger.md):
  /plexus/ledger/receipt/1   a doubly signed receipt
  /plexus/ledger/fraud/1     a signed fraud proof
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from ledger import LedgerStore
from ledger.errors import InvalidRecord, LedgerError
from ledger.fraud import Checker

log = logging.getLogger(__name__)

TOPICS = {"receipt": "/plexus/ledger/receipt/1", "fraud": "/plexus/ledger/fraud/1"}
MAX_MESSAGE_BYTES = 70_000
PEER_STREAM_TIMEOUT_S = 5.0
RETRY_PEER_S = 300.0
MAX_REPUBLISHED = 16  # fraud proofs kept to send to peers that join later
REPUBLISH_DELAY_S = 1.0


class LedgerGossip:
    """Publish and receive ledger objects; create with `LedgerGossip.open`."""

    def __init__(self, pubsub: Pubsub, store: LedgerStore, checker: Checker) -> None:
        self.pubsub = pubsub
        self.store = store
        self.checker = checker
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()  # (kind, reason)
        self._limiter = trio.CapacityLimiter(1)
        # Fraud proofs this peer published, sent again to peers that join later.
        self._proofs: deque[bytes] = deque(maxlen=MAX_REPUBLISHED)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, host: IHost, store: LedgerStore, checker: Checker
    ) -> AsyncIterator[LedgerGossip]:
        router = GossipSub(
            protocols=[PROTOCOL_ID],
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=5,
            do_px=False,  # never learn (and dial) peers from others' suggestions
        )
        pubsub = Pubsub(host, router, strict_signing=True)
        gossip = cls(pubsub, store, checker)
        async with background_trio_service(pubsub), background_trio_service(router):
            await pubsub.wait_until_ready()
            for kind, topic in TOPICS.items():
                pubsub.set_topic_validator(topic, gossip._validator(kind), True)
            async with trio.open_nursery() as nursery:
                for kind, topic in TOPICS.items():
                    subscription = await pubsub.subscribe(topic)
                    nursery.start_soon(gossip._drain, kind, subscription)
                nursery.start_soon(gossip._adopt_connected_peers)
                try:
                    yield gossip
                finally:
                    nursery.cancel_scope.cancel()

    async def _adopt_connected_peers(self) -> None:
        """Peers connected before pubsub started get no 'connected' event: add them,
        and keep adding peers the DHT connects to later. Peers without pubsub (a
        bootstrap peer) are asked again only after `RETRY_PEER_S`."""
        refused: dict[ID, float] = {}
        known: set[ID] = set()
        while True:
            now = trio.current_time()
            for peer in self.pubsub.host.get_connected_peers():
                if peer in self.pubsub.peers or now < refused.get(peer, 0.0):
                    continue
                with trio.move_on_after(PEER_STREAM_TIMEOUT_S):
                    await self.pubsub.ensure_peer_stream(peer, PEER_STREAM_TIMEOUT_S)
                if peer not in self.pubsub.peers:
                    refused[peer] = trio.current_time() + RETRY_PEER_S
            joined = set(self.pubsub.peers) - known
            known |= joined
            if joined and self._proofs:
                # A proof published before these peers were reachable never got to them.
                await trio.sleep(REPUBLISH_DELAY_S)  # let them learn our subscriptions
                for proof in list(self._proofs):
                    await self._send("fraud", proof)
            await trio.sleep(2.0)

    async def _drain(self, kind: str, subscription: object) -> None:
        """Messages reaching the subscription were validated and stored already."""
        while True:
            await subscription.get()  # type: ignore[attr-defined]

    def _validator(self, kind: str):  # type: ignore[no-untyped-def]
        async def validate(peer: ID, message: rpc_pb2.Message) -> bool:
            data = bytes(message.data)
            if len(data) > MAX_MESSAGE_BYTES:
                self.rejected[(kind, "too_large")] += 1
                return False
            try:
                await trio.to_thread.run_sync(self._store, kind, data, limiter=self._limiter)
            except InvalidRecord as exc:
                self.rejected[(kind, exc.reason.value)] += 1
                log.info("refused a gossiped %s from %s: %s", kind, peer, exc)
                return False
            except LedgerError as exc:
                self.rejected[(kind, "store_error")] += 1
                log.warning("could not store a gossiped %s: %s", kind, exc)
                return False
            self.accepted[kind] += 1
            return True

        return validate

    def _store(self, kind: str, data: bytes) -> None:
        if kind == "receipt":
            self.store.add_receipt(data)
        else:
            self.store.add_fraud_proof(data, self.checker)

    async def publish(self, kind: str, data: bytes) -> None:
        """Send a receipt or fraud proof to every peer keeping a ledger (best effort;
        fraud proofs are sent again to peers that join later)."""
        if kind == "fraud":
            self._proofs.append(data)
        await self._send(kind, data)

    async def _send(self, kind: str, data: bytes) -> None:
        try:
            with trio.move_on_after(5.0):
                await self.pubsub.publish(TOPICS[kind], data)
        except Exception as exc:  # py-libp2p raises many types; gossip is best effort
            log.warning("could not gossip a %s: %s", kind, exc)
