"""One Kademlia RPC to one peer (GET_VALUE, GET_PROVIDERS, PUT_VALUE), with a deadline.

py-libp2p's own per-peer helpers swallow every error, log warnings, and its lookups answer
from 24-48 h local caches. Plexus needs fresh answers and to know *why* a peer failed
(unreachable -> drop it from the routing table; refused a PUT -> the record was rejected),
so it speaks the same wire messages (/ipfs/kad/1.0.0, varint-framed protobuf) itself.

A py-libp2p node serves at most 12 inbound DHT streams at once and resets the rest
(edge 13), so the client keeps at most PER_PEER_STREAMS streams open to any one peer and
retries a request that was reset before any answer.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable

import trio
import varint
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.kad_dht.utils import maybe_consume_signed_record
from libp2p.network.stream.exceptions import StreamReset
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.records.record import make_signed_put_record
from libp2p.stream_muxer.exceptions import MuxedStreamReset
from libp2p.utils.varint import read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from plexus.errors import NetworkError

log = logging.getLogger(__name__)

MAX_RESPONSE_SIZE = 1024 * 1024
CLOSER_PEER_ADDR_TTL = 600
PER_PEER_STREAMS = 3
ATTEMPTS = 3
RETRY_BASE_DELAY = 0.05
TIMEOUTS_BEFORE_DEAD = 3


class PeerUnreachable(NetworkError):
    """The peer could not be dialled, or did not answer within the deadline."""


class KadClient:
    """Kademlia requests from `host`, each bounded by `timeout` seconds (retries included).

    `on_dead(peer)` is called when a peer cannot be dialled, or timed out
    TIMEOUTS_BEFORE_DEAD times in a row (a busy peer is slow, not dead): py-libp2p never
    drops dead peers from its routing table by itself (edge 8)."""

    def __init__(
        self, host: IHost, timeout: float, on_dead: Callable[[ID], object] | None = None
    ) -> None:
        self.host = host
        self.timeout = timeout
        self.on_dead = on_dead
        self._limits: defaultdict[ID, trio.CapacityLimiter] = defaultdict(
            lambda: trio.CapacityLimiter(PER_PEER_STREAMS)
        )
        self._timeouts: defaultdict[ID, int] = defaultdict(int)

    async def get_value(self, peer: ID, key: bytes) -> tuple[bytes | None, list[ID]]:
        """The value `peer` stores under `key` (None if none) and the closer peers it knows.
        Raises PeerUnreachable."""
        response = await self._request(peer, Message(type=Message.MessageType.GET_VALUE, key=key))
        closer = self._absorb_closer_peers(response)
        if (
            response is None
            or response.type != Message.MessageType.GET_VALUE
            or not response.HasField("record")
            or response.record.key != key
            or not response.record.value
        ):
            return None, closer
        return bytes(response.record.value), closer

    async def get_providers(self, peer: ID, key: bytes) -> tuple[list[PeerInfo], list[ID]]:
        """The providers `peer` knows for `key` and the closer peers it knows."""
        request = Message(type=Message.MessageType.GET_PROVIDERS, key=key)
        response = await self._request(peer, request)
        closer = self._absorb_closer_peers(response)
        if response is None or response.type != Message.MessageType.GET_PROVIDERS:
            return [], closer
        providers = []
        for proto in response.providerPeers:
            try:
                providers.append(PeerInfo(ID(proto.id), [Multiaddr(a) for a in proto.addrs]))
            except (ValueError, TypeError) as exc:
                log.debug("skipping a malformed provider from %s: %s", peer, exc)
        return providers, closer

    async def put_value(self, peer: ID, key: bytes, value: bytes) -> bool:
        """Ask `peer` to store `value` under `key`: True if it acknowledged, False if it
        refused (its validator rejected the value, or it holds a better one)."""
        request = Message(type=Message.MessageType.PUT_VALUE, key=key)
        request.record.CopyFrom(make_signed_put_record(key, value, self.host.get_private_key()))
        response = await self._request(peer, request)
        return (
            response is not None
            and response.type == Message.MessageType.PUT_VALUE
            and response.key == key
        )

    async def add_provider(self, peer: ID, key: bytes) -> bool:
        """Register this host as a provider of `key` at `peer`: True once `peer` echoed the
        request (py-libp2p servers do, after storing it; py-libp2p's own client does not
        wait, so a provide() may not have landed when it returns)."""
        request = Message(type=Message.MessageType.ADD_PROVIDER, key=key)
        provider = request.providerPeers.add()
        provider.id = self.host.get_id().to_bytes()
        provider.addrs.extend(addr.to_bytes() for addr in self.host.get_addrs())
        response = await self._request(peer, request)
        return (
            response is not None
            and response.type == Message.MessageType.ADD_PROVIDER
            and response.key == key
        )

    async def _request(self, peer: ID, request: Message) -> Message | None:
        """One answer to `request`, or None when the peer reset or closed the stream every
        time instead of answering (how a Kademlia server refuses, or sheds load)."""
        request.senderRecord = env_to_send_in_RPC(self.host)[0]
        payload = request.SerializeToString()
        frame = varint.encode(len(payload)) + payload
        with trio.move_on_after(self.timeout):
            async with self._limits[peer]:
                for attempt in range(ATTEMPTS):
                    data = await self._exchange(peer, frame)
                    if data is not None:
                        self._timeouts.pop(peer, None)
                        return self._parse(peer, data)
                    if attempt + 1 < ATTEMPTS:
                        await trio.sleep(RETRY_BASE_DELAY * 3**attempt * (1 + random.random()))
                return None
        self._timeouts[peer] += 1
        if self._timeouts[peer] >= TIMEOUTS_BEFORE_DEAD:
            self._dead(peer)
        raise PeerUnreachable(f"{peer} did not answer within {self.timeout:.1f} s")

    def _dead(self, peer: ID) -> None:
        self._timeouts.pop(peer, None)
        self._limits.pop(peer, None)
        if self.on_dead is not None:
            self.on_dead(peer)

    async def _exchange(self, peer: ID, frame: bytes) -> bytes | None:
        try:
            stream = await self.host.new_stream(peer, [TProtocol(PROTOCOL_ID)])
        except Exception as exc:  # libp2p raises many unrelated types for a failed dial
            if peer in self.host.get_connected_peers():
                # The connection lives on but the stream was reset while it was being
                # negotiated: a busy peer shedding load, not a dead one (forgetting it
                # would leave a node whose only contact it is with no one to retry on).
                log.debug("no DHT stream to %s on its live connection: %r", peer, exc)
                return None
            self._dead(peer)
            raise PeerUnreachable(f"cannot open a DHT stream to {peer}: {exc}") from exc
        try:
            await stream.write(frame)
            return await read_varint_prefixed_bytes_limited(stream, MAX_RESPONSE_SIZE)
        except Exception as exc:  # reset, EOF, oversize: all mean "no answer this time"
            log.debug("no answer from %s: %r", peer, exc)
            if not (_is_reset(exc) and peer in self.host.get_connected_peers()):
                # A reset that came over a live connection leaves it (and the other
                # requests on it) alone; anything else may mean a dead connection.
                await self._close_connection(peer)
            return None
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.close()
                except Exception as exc:  # closing a reset stream raises assorted errors
                    log.debug("closing a DHT stream to %s: %r", peer, exc)

    async def _close_connection(self, peer: ID) -> None:
        """The connection may be dead (the peer was killed): drop it so that a retry
        dials afresh, which fails at once for a dead peer instead of running out the
        whole timeout on a stale connection; a live peer just costs one new dial."""
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await self.host.get_network().close_peer(peer)
            except Exception as exc:  # libp2p raises assorted errors here
                log.debug("closing the connection to %s: %r", peer, exc)

    def _parse(self, peer: ID, data: bytes) -> Message | None:
        response = Message()
        try:
            response.ParseFromString(data)
        except Exception as exc:  # protobuf's DecodeError
            log.debug("undecodable DHT response from %s: %s", peer, exc)
            return None
        if not maybe_consume_signed_record(response, self.host, peer):
            log.debug("invalid signed peer record from %s", peer)
            return None
        return response

    def _absorb_closer_peers(self, response: Message | None) -> list[ID]:
        """Closer peers named in a response; their addresses go to the peerstore so they
        can be dialled next."""
        if response is None:
            return []
        closer = []
        own = self.host.get_id()
        for proto in response.closerPeers:
            try:
                peer = ID(proto.id)
                addrs = [Multiaddr(a) for a in proto.addrs]
            except (ValueError, TypeError):
                continue
            if peer == own:
                continue
            if addrs:
                self.host.get_peerstore().add_addrs(peer, addrs, CLOSER_PEER_ADDR_TTL)
            maybe_consume_signed_record(proto, self.host)
            closer.append(peer)
        return closer


def _is_reset(exc: BaseException) -> bool:
    """The peer reset this one stream (how a Kademlia server refuses or sheds load)."""
    return isinstance(exc, (StreamReset, MuxedStreamReset))
