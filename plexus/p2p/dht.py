"""A Plexus DHT node: a py-libp2p host plus Kademlia (server mode) where servers announce
signed ServerRecords and clients find the servers of a model.

    async with DHTNode.open(identity, "127.0.0.1", 0, initial_peers) as node:
        print(node.multiaddrs)
        await node.announce(record)          # or: await node.announce_forever(make, 30)
        servers = await node.find_servers(model_id)

Liveness comes only from record expiry: py-libp2p never evicts dead peers or providers,
so a dead server vanishes from find_servers once its last record expires.
Workarounds for py-libp2p 0.8.1 are marked "edge N" (the sharp edges listed in
docs/protocol.md, Part 1, "Implementation notes").
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.kad_dht.common import format_time_rfc3339
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.records.record import make_signed_put_record
from libp2p.tools.anyio_service import background_trio_service

from plexus.errors import NetworkError, RecordError
from plexus.identity import Identity
from plexus.p2p import kad_rpc
from plexus.p2p.addrs import announce_rewriter, ensure_port_free, peer_infos, tcp_multiaddr
from plexus.p2p.hygiene import prune
from plexus.p2p.keys import provider_key, provider_keys, provider_shard, record_key
from plexus.p2p.lookup import Query, T, iterative_lookup
from plexus.p2p.records import ServerRecord, next_seq, sign_record, verify_record
from plexus.p2p.validator import plexus_validator

log = logging.getLogger(__name__)

ANNOUNCE_RETRY_PAUSE = 0.25
"""Seconds before an announce that reached no peer is retried (doubling each time)."""

WITHDRAW_LINGER = 1.0
"""Seconds a withdrawal waits for more acknowledgements after the first one."""


@dataclass(frozen=True)
class DHTConfig:
    """Timeouts (seconds) and fan-out of DHT operations."""

    rpc_timeout: float = 5.0
    """One request to one peer, dial and retries included."""
    operation_timeout: float = 20.0
    """A whole announce / find_servers / withdraw."""
    connect_timeout: float = 10.0
    """Dialling the initial peers."""
    replication: int = 20
    """A record is stored at (and a provider registered with) this many closest peers."""
    record_quorum: int = 2
    """A record lookup stops once this many peers returned a valid copy."""
    provider_quorum: int = 3
    """A provider lookup (per shard) stops once this many peers returned providers..."""
    provider_max_queries: int = 8
    """... or this many peers were asked."""
    max_queries: int = 20
    """Peers asked at most per lookup."""
    parallel_fetches: int = 8
    """Records fetched concurrently by find_servers."""
    rewalk_interval: float = 60.0
    """Announces reuse the closest peers found this long ago, unless the routing table
    changed size (peers joined or died) in between."""
    reprovide_interval: float = 300.0
    """Provider registrations are renewed this often (must be < provider_ttl)."""
    provider_ttl: float = 900.0
    """Providers not renewed for this long are dropped by Plexus storing nodes."""
    maintenance_period: float = 10.0
    """Rejoin when isolated; prune expired records and stale providers."""


@dataclass
class Announced:
    """How many remote peers took an announce."""

    stored: int = 0
    """Peers that acknowledged storing the record."""
    providing: int | None = None
    """Peers that registered us as a provider of the model; None: not renewed this time."""


@dataclass
class _Targets:
    """The closest peers to one key, as last found by a walk."""

    peers: list[ID]
    found_at: float
    routing_table_size: int


class DHTNode:
    """One peer's presence in the Plexus DHT. Create with `DHTNode.open`."""

    def __init__(
        self,
        identity: Identity,
        host: IHost,
        dht: KadDHT,
        initial_peers: list[PeerInfo],
        config: DHTConfig,
    ) -> None:
        self.identity = identity
        self.host = host
        self.dht = dht
        self.initial_peers = initial_peers
        self.config = config
        self.rpc = kad_rpc.KadClient(host, config.rpc_timeout, on_dead=self._forget)
        self._last_announced: ServerRecord | None = None
        self._targets: dict[bytes, _Targets] = {}
        self._provided: dict[bytes, float] = {}
        self._withdrawn = False

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        identity: Identity,
        listen_host: str = "127.0.0.1",
        port: int = 0,
        initial_peers: Sequence[str] = (),
        *,
        announce_host: str | None = None,
        config: DHTConfig | None = None,
    ) -> AsyncIterator[DHTNode]:
        """Listen on `listen_host:port` (0: any free port), join through `initial_peers`
        (multiaddrs ending /p2p/<id>), run until the block exits, then close the host.
        Raises ConfigError for a bad address, NetworkError if the port is taken."""
        config = config or DHTConfig()
        quiet_libp2p_logging()
        peers = peer_infos(initial_peers)
        listen = tcp_multiaddr(listen_host, port)
        ensure_port_free(listen_host, port)
        host = new_host(
            key_pair=identity.key_pair,
            # edge 1: one connection per peer, no 250 ms happy-eyeballs wait per dial.
            connection_config=ConnectionConfig(max_connections_per_peer=1),
            # Never send packets beyond the addresses we are given: these are the
            # defaults in 0.8.1, spelled out so an upgrade cannot silently turn them on.
            enable_mDNS=False,
            enable_upnp=False,
            enable_autotls=False,
            bootstrap=None,
            disable_identify_address_discovery=True,
            addrs_factory=announce_rewriter(announce_host) if announce_host else None,
        )
        # edge 7: the DHT exists before any connection; edge 9: strict namespace.
        dht = KadDHT(host, DHTMode.SERVER, strict_validation=True, enable_random_walk=False)
        dht.set_validator(plexus_validator())
        node = cls(identity, host, dht, peers, config)
        try:
            async with host.run(listen_addrs=[listen]), background_trio_service(dht):
                # py-libp2p's auto-connector dials every peer it has heard of until it has
                # ~100 connections; Plexus keeps only the connections the DHT uses.
                await host.get_network().auto_connector.stop()
                await node.join()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(node._maintain)
                    try:
                        yield node
                    finally:
                        nursery.cancel_scope.cancel()
                        await _close_connections(host)
        except BaseExceptionGroup as group:
            # Five nested nurseries wrap whatever the caller's block raised; give it back.
            leaf = _sole_leaf(group)
            if leaf is None:
                raise
            raise leaf from None

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id_str

    @property
    def multiaddrs(self) -> list[str]:
        """Full addresses others can join through: /ip4/H/tcp/P/p2p/<peer-id>."""
        return [str(addr) for addr in self.host.get_addrs()]

    def connected_peers(self) -> list[str]:
        return [p.to_base58() for p in self.host.get_connected_peers()]

    async def join(self) -> int:
        """Dial the initial peers (in parallel, bounded), then look ourselves up so that
        the network learns about us. Returns how many initial peers answered."""
        joined: list[ID] = []

        async def dial(info: PeerInfo) -> None:
            network = self.host.get_network()
            network.unblock_peer(info.peer_id)  # edge 11: forget an earlier failure
            with trio.move_on_after(self.config.connect_timeout):
                try:
                    await self.host.connect(info)
                except Exception as exc:  # libp2p's dial errors have no common base
                    log.warning("cannot reach initial peer %s: %s", info.peer_id, exc)
                else:
                    try:
                        await self.dht.add_peer(info.peer_id, skip_server_mode_check=True)
                    except Exception as exc:  # the routing table's own errors are untyped
                        log.warning("cannot add initial peer %s: %s", info.peer_id, exc)
                    await self._introduce(info.peer_id)
                    joined.append(info.peer_id)
                    return
            # edge 11: a failed dial leaves a 60 s negative cache and stale addresses.
            network.unblock_peer(info.peer_id)
            self.host.get_peerstore().clear_addrs(info.peer_id)

        async with trio.open_nursery() as nursery:
            for info in self.initial_peers:
                nursery.start_soon(dial, info)
        if joined:
            with trio.move_on_after(self.config.operation_timeout):
                await self.dht.peer_routing.find_closest_peers_network(
                    self.host.get_id().to_bytes()
                )
        if self.initial_peers:
            log.info(
                "joined through %d/%d initial peers; routing table has %d peers",
                len(joined),
                len(self.initial_peers),
                self.dht.get_routing_table_size(),
            )
        return len(joined)

    async def _introduce(self, peer: ID) -> None:
        """Make `peer` learn our listen addresses. A py-libp2p node adds a peer to its
        routing table when that peer opens a DHT stream, but only if it already knows the
        peer's addresses, which it learns from the signed peer record *in* that first
        request; so without this, the initial peers skip us on first contact."""
        try:
            await self.rpc.get_value(peer, record_key(self.peer_id).encode())
        except kad_rpc.PeerUnreachable as exc:
            log.debug("introducing ourselves: %s", exc)

    def _forget(self, peer: ID) -> None:
        """A peer died: drop it from the routing table (edge 8) and from cached targets."""
        self.dht.routing_table.remove_peer(peer)
        for targets in self._targets.values():
            if peer in targets.peers:
                targets.peers.remove(peer)

    async def _maintain(self) -> None:
        while True:
            await trio.sleep(self.config.maintenance_period)
            values, providers = prune(
                self.dht, now=time.time(), provider_ttl=self.config.provider_ttl
            )
            if values or providers:
                log.debug("pruned %d expired records, %d stale providers", values, providers)
            if self.initial_peers and not self.host.get_connected_peers():
                log.info("no connected peers; rejoining through the initial peers")
                await self.join()

    # -- servers' side --------------------------------------------------------------------

    async def announce(self, record: ServerRecord) -> Announced:
        """Sign `record`, store it under /plexus/<our id> at the peers closest to that key,
        and (every reprovide_interval, or when the model changes) register as a provider
        of its model at the peers closest to our shard's provider key.
        Raises RecordError for a bad record, NetworkError when it timed out."""
        envelope = sign_record(record, self.identity)
        verify_record(envelope, peer_id=self.peer_id)
        done = Announced()
        if self._withdrawn:
            log.debug("not announcing seq %d: this node withdrew", record.seq)
            return done
        pkey = provider_key(record.model_id, provider_shard(self.peer_id))

        key = record_key(self.peer_id).encode()
        retry_until = trio.current_time() + self.config.operation_timeout / 2

        async def put() -> None:
            done.stored = await self._until_taken(lambda: self._put(key, envelope), retry_until)

        async def provide() -> None:
            done.providing = await self._until_taken(lambda: self._provide(pkey), retry_until)

        try:
            with trio.fail_after(self.config.operation_timeout):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(put)
                    if self._provide_due(pkey):
                        nursery.start_soon(provide)
        except trio.TooSlowError as exc:
            raise NetworkError(f"announcing record seq {record.seq} timed out") from exc
        self._last_announced = record
        if (done.stored == 0 or done.providing == 0) and self.host.get_connected_peers():
            log.warning("record seq %d reached no peer: %s", record.seq, done)
        return done

    async def _until_taken(self, send: Callable[[], Awaitable[int]], retry_until: float) -> int:
        """`send()`, and again after a growing pause while no peer took it though some are
        connected, until trio's clock reaches `retry_until`: on a busy network the first
        try can time out at every peer (a joining server's first announce meets peers
        that are joining too), and waiting a whole announce period would leave the server
        unfindable meanwhile. Returns how many peers took the last try (0 if cut off)."""
        taken = await send()
        pause = ANNOUNCE_RETRY_PAUSE
        with trio.move_on_at(retry_until):
            while not taken and self.host.get_connected_peers():
                log.info("no peer took an announce yet; retrying in %.2f s", pause)
                await trio.sleep(pause)
                pause *= 2
                taken = await send()
        return taken

    async def withdraw(self, linger: float = WITHDRAW_LINGER) -> int:
        """Best effort: replace our record with one that expires now, so finders drop us
        at once instead of at expiry. Returns how many peers took the withdrawal. This node
        is leaving: later announce() calls do nothing, so that one still scheduled cannot
        put the record back. Once one peer took it, the others get `linger` seconds more:
        when a whole swarm stops at once, the peers that are leaving too never answer,
        and waiting for them would hold every exit for the whole operation timeout."""
        self._withdrawn = True
        if self._last_announced is None:
            return 0
        record = replace(self._last_announced, seq=next_seq(), expires_at=time.time())
        envelope = sign_record(record, self.identity)
        key = record_key(self.peer_id).encode()
        taken = 0
        first = trio.Event()

        async def put() -> None:
            await self._put(key, envelope, on_taken=taken_by_one)
            nursery.cancel_scope.cancel()

        def taken_by_one() -> None:
            nonlocal taken
            taken += 1
            first.set()

        with trio.move_on_after(self.config.operation_timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(put)
                await first.wait()
                await trio.sleep(linger)
                nursery.cancel_scope.cancel()
        if taken:
            self._last_announced = None
        return taken

    async def announce_forever(
        self,
        make_record: Callable[[], ServerRecord],
        period: float,
        *,
        withdraw_on_exit: bool = True,
    ) -> None:
        """Announce `make_record()` every `period` seconds until cancelled (then withdraw).
        Each record should expire at most 2 * period after it is made."""
        try:
            while True:
                deadline = trio.current_time() + period
                record = make_record()
                ttl = record.expires_at - time.time()
                if ttl <= period:
                    log.warning("record ttl %.1f s <= announce period %.1f s", ttl, period)
                try:
                    done = await self.announce(record)
                    log.debug("announced seq %d: %s", record.seq, done)
                except (NetworkError, RecordError) as exc:
                    log.warning("announce failed: %s", exc)
                await trio.sleep_until(deadline)
        finally:
            if withdraw_on_exit:
                with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                    await self.withdraw()

    def _provide_due(self, key: bytes) -> bool:
        last = self._provided.get(key)
        targets = self._targets.get(key)
        return (
            last is None
            or time.monotonic() - last >= self.config.reprovide_interval
            or targets is None
            or self._stale(targets)
        )

    async def _put(
        self, key: bytes, value: bytes, on_taken: Callable[[], None] | None = None
    ) -> int:
        """Store locally, then at the closest peers to `key`; count acknowledgements
        (`on_taken()` runs at each)."""
        # put_record, not put: py-libp2p would also republish a `put` value on its own.
        record = make_signed_put_record(key, value, self.host.get_private_key())
        record.timeReceived = format_time_rfc3339()
        self.dht.value_store.put_record(key, record)
        return await self._send_to_closest(
            key, self.rpc.get_value, lambda peer: self.rpc.put_value(peer, key, value), on_taken
        )

    async def _provide(self, key: bytes) -> int:
        """Register as a provider of `key`, locally and at the closest peers to it."""
        own = PeerInfo(self.host.get_id(), self.host.get_addrs())
        self.dht.provider_store.add_provider(key, own)
        count = await self._send_to_closest(
            key, self.rpc.get_providers, lambda peer: self.rpc.add_provider(peer, key)
        )
        self._provided[key] = time.monotonic()
        return count

    async def _send_to_closest(
        self,
        key: bytes,
        walk: Callable[[ID, bytes], Awaitable[tuple[object, list[ID]]]],
        call: Callable[[ID], Awaitable[bool]],
        on_taken: Callable[[], None] | None = None,
    ) -> int:
        """Run `call` on the closest peers to `key` we already know, at once, and on those a
        fresh walk (with `walk`) adds; how many returned True (`on_taken()` runs at
        each). Not walk-then-send: a walk waits for slow peers, and the replicas at the
        live ones must not age meanwhile."""
        sent: set[ID] = set()
        accepted = 0

        async def send(peers: Sequence[ID]) -> None:
            nonlocal accepted
            fresh = [p for p in peers if p not in sent]
            sent.update(fresh)
            count = await self._count(fresh, call, on_taken)
            accepted += count  # not `accepted += await ...`: that reads first

        async def walk_then_send() -> None:
            await send(await self._closest(key, walk))

        cached = self._targets.get(key)
        known = (
            list(cached.peers)
            if cached is not None
            else self.dht.routing_table.find_local_closest_peers(key, self.config.replication)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, [p for p in known if p != self.host.get_id()])
            nursery.start_soon(walk_then_send)
        return accepted

    async def _count(
        self,
        peers: Sequence[ID],
        call: Callable[[ID], Awaitable[bool]],
        on_taken: Callable[[], None] | None = None,
    ) -> int:
        """Run `call` on every peer at once; how many returned True (`on_taken()` runs at
        each as it comes)."""
        accepted = 0

        async def one(peer: ID) -> None:
            nonlocal accepted
            try:
                ok = await call(peer)  # not `accepted += await ...`: that reads first
            except kad_rpc.PeerUnreachable as exc:
                log.debug("%s", exc)
                return
            if ok:
                accepted += 1
                if on_taken is not None:
                    on_taken()

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(one, peer)
        return accepted

    def _stale(self, targets: _Targets) -> bool:
        return (
            time.monotonic() - targets.found_at >= self.config.rewalk_interval
            or targets.routing_table_size != self.dht.get_routing_table_size()
            or not targets.peers
        )

    async def _closest(
        self, key: bytes, rpc: Callable[[ID, bytes], Awaitable[tuple[object, list[ID]]]]
    ) -> list[ID]:
        """The `replication` reachable peers closest to `key`, walking with `rpc`
        (GET_VALUE or GET_PROVIDERS) when the last walk is stale. Not py-libp2p's
        find_closest_peers_network: its FIND_NODE refuses keys over 50 bytes that are not
        multihashes, and /plexus/<id> keys are 60 bytes."""
        cached = self._targets.get(key)
        if cached is not None and not self._stale(cached):
            return list(cached.peers)

        async def ask(peer: ID) -> tuple[bool, list[ID]]:
            _, closer = await rpc(peer, key)
            return True, closer

        rt_size = self.dht.get_routing_table_size()
        answers = await self._lookup(key, ask, want=self.config.replication)
        peers = [peer for peer, _ in answers]
        self._targets[key] = _Targets(peers, time.monotonic(), rt_size)
        return list(peers)

    # -- clients' side --------------------------------------------------------------------

    async def find_servers(self, model_id: str) -> list[ServerRecord]:
        """Valid, unexpired records of the servers of `model_id`, sorted by (start, end,
        peer_id). Raises NetworkError if the lookup timed out."""
        try:
            with trio.fail_after(self.config.operation_timeout):
                providers = await self._find_providers(model_id)
                records = await self._fetch_records(providers)
        except trio.TooSlowError as exc:
            raise NetworkError(f"finding servers of {model_id} timed out") from exc
        now = time.time()
        found = [r for r in records if r.model_id == model_id and r.is_live(now)]
        log.debug(
            "%s: %d providers, %d records, %d live",
            model_id,
            len(providers),
            len(records),
            len(found),
        )
        return sorted(found, key=lambda r: (r.start, r.end, r.peer_id))

    async def get_record(self, peer_id: str) -> ServerRecord | None:
        """The newest valid, unexpired record of `peer_id`, or None."""
        try:
            with trio.fail_after(self.config.operation_timeout):
                record = await self._fetch_record(peer_id)
        except trio.TooSlowError as exc:
            raise NetworkError(f"fetching the record of {peer_id} timed out") from exc
        return record if record is not None and record.is_live() else None

    async def _find_providers(self, model_id: str) -> set[str]:
        """Peer ids registered as providers of `model_id`, over every shard."""
        found: set[str] = set()

        async def one_shard(key: bytes) -> None:
            found.update(p.peer_id.to_base58() for p in self.dht.provider_store.get_providers(key))

            async def ask(peer: ID) -> tuple[list[str] | None, list[ID]]:
                infos, closer = await self.rpc.get_providers(peer, key)
                return [i.peer_id.to_base58() for i in infos] or None, closer

            # An empty shard costs provider_max_queries requests; a peer that joined near
            # the key after the last registration answers empty, so empty answers do
            # not count towards the quorum.
            answers = await self._lookup(
                key,
                ask,
                want=self.config.provider_quorum,
                max_queries=self.config.provider_max_queries,
            )
            for _, peers in answers:
                found.update(peers)

        async with trio.open_nursery() as nursery:
            for key in provider_keys(model_id):
                nursery.start_soon(one_shard, key)
        return found

    async def _fetch_records(self, peer_ids: set[str]) -> list[ServerRecord]:
        records: list[ServerRecord] = []
        limiter = trio.CapacityLimiter(self.config.parallel_fetches)

        async def fetch(peer_id: str) -> None:
            async with limiter:
                record = await self._fetch_record(peer_id)
            if record is not None:
                records.append(record)

        async with trio.open_nursery() as nursery:
            for peer_id in peer_ids:
                nursery.start_soon(fetch, peer_id)
        return records

    async def _fetch_record(self, peer_id: str) -> ServerRecord | None:
        """Highest-seq valid record of `peer_id` among our copy and the closest peers'.
        Expired ones count too (and are filtered by the caller), so that a withdrawal
        hides the older records it replaces."""
        key = record_key(peer_id).encode("utf-8")
        candidates: list[ServerRecord] = []

        def check(value: bytes | None) -> ServerRecord | None:
            if value is None:
                return None
            try:
                return verify_record(value, peer_id=peer_id, expiry_grace=math.inf)
            except RecordError as exc:
                log.debug("dropping a bad record of %s: %s", peer_id, exc)
                return None

        local = self.dht.value_store.get(key)
        if local is not None and (record := check(local.value)) is not None:
            candidates.append(record)

        async def ask(peer: ID) -> tuple[ServerRecord | None, list[ID]]:
            value, closer = await self.rpc.get_value(peer, key)
            return check(value), closer

        def newest_is_live(found: list[ServerRecord]) -> bool:
            newest = max(candidates + found, key=lambda r: r.seq, default=None)
            return newest is not None and newest.is_live()

        # Copies that all lapsed may just be stale (their owner's puts are slow): look
        # further for a live one before believing the server is gone.
        quorum = self.config.record_quorum - len(candidates)
        if quorum > 0 or not newest_is_live([]):
            answers = await self._lookup(key, ask, want=max(1, quorum), enough=newest_is_live)
            candidates += [r for _, r in answers]
        return max(candidates, key=lambda r: r.seq, default=None)

    async def _lookup(
        self,
        key: bytes,
        ask: Query[T],
        *,
        want: int,
        max_queries: int | None = None,
        enough: Callable[[list[T]], bool] | None = None,
    ) -> list[tuple[ID, T]]:
        result = await iterative_lookup(
            self.host,
            self.dht.routing_table,
            key,
            ask,
            want=want,
            max_queries=max_queries or self.config.max_queries,
            enough=enough,
        )
        return result.answers


async def _close_connections(host: IHost) -> None:
    """Close our connections and listener now. py-libp2p's host.run leaves them to the
    garbage collector, so a node closed inside a longer-lived process (a client
    library, a test) stays ESTABLISHED to its peers: their requests then hang until
    they time out, instead of failing at once on a closed socket."""
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        try:
            await host.get_network().close()
        except Exception as exc:  # libp2p raises assorted errors from a closing swarm
            log.debug("closing the swarm: %r", exc)


def _sole_leaf(group: BaseExceptionGroup) -> BaseException | None:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


def configure_libp2p_logging(level: str) -> None:
    """py-libp2p logs routine peer failures as warnings and errors; show them only when
    debugging Plexus itself."""
    libp2p_logger = logging.getLogger("libp2p")
    # Importing libp2p detaches its loggers (propagate=False, no handler: warnings reach
    # stderr through logging.lastResort); route them through the application's handlers.
    libp2p_logger.propagate = True
    threshold = logging.DEBUG if level == "DEBUG" else logging.CRITICAL
    libp2p_logger.setLevel(threshold)
    # Some of its modules pin their own level at import (auto_connector: INFO), which
    # overrides the parent's; filter at the application's handlers as well.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _Libp2pFilter) for f in handler.filters):
            handler.addFilter(_Libp2pFilter(threshold))
    # Its multiaddr dependency logs every address it parses at DEBUG: never useful.
    logging.getLogger("multiaddr").setLevel(logging.WARNING)


def quiet_libp2p_logging() -> None:
    """For programs using Plexus as a library, where no `plexus` command configured
    logging: importing py-libp2p detaches its loggers, so its routine warnings ("Failed
    to read DHT message from stream", a peer without pubsub) reach stderr through
    `logging.lastResort`, dozens a minute. Route them through the application's own
    handlers instead, and only critical ones unless Plexus' logger is at DEBUG (as the
    `plexus` commands do). An application that gave the "libp2p" logger handlers of its
    own keeps its setup, as does one where configure_libp2p_logging() already ran (both
    leave the logger attached or with handlers: it is detached only as py-libp2p left it)."""
    libp2p_logger = logging.getLogger("libp2p")
    if libp2p_logger.propagate or libp2p_logger.handlers:
        return
    libp2p_logger.propagate = True
    debugging = logging.getLogger("plexus").isEnabledFor(logging.DEBUG)
    libp2p_logger.setLevel(logging.DEBUG if debugging else logging.CRITICAL)


class _Libp2pFilter(logging.Filter):
    """Drops py-libp2p records below `threshold`, whatever level their logger has."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("libp2p") or record.levelno >= self.threshold
