"""`plexus serve` end to end: choose and load a span, measure it, serve and announce it.

Lifecycle: load (progress bar) -> measure throughput (cached) -> open the DHT node and
the data plane -> print multiaddrs -> announce every period and when load or free cache
changes (at most every CHANGE_MIN_GAP_S) -> on SIGINT/SIGTERM stop taking sessions,
withdraw, exit 0.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import trio

from plexus import __version__
from plexus.client.pool import ConnectionPool
from plexus.errors import ConfigError
from plexus.identity import Identity
from plexus.models import load_span, open_model
from plexus.models.resolve import ModelFiles
from plexus.p2p.dataplane import Limits, serve_dataplane
from plexus.p2p.dht import DHTNode
from plexus.p2p.records import ServerRecord, make_record
from plexus.receipt_writer import QUIET_S, ReceiptWriter
from plexus.server import memory, neighbours
from plexus.server.accounting import BalanceBook
from plexus.server.backend import SpanBackend
from plexus.server.forwarding import Forwarder
from plexus.server.handlers import BlockServerHandlers
from plexus.server.span_choice import Coverage, choose_span, should_move
from plexus.server.throughput import cached_throughput
from plexus.server.verifier import ServerVerifier
from plexus.verification import NETWORK_ID

log = logging.getLogger(__name__)

CHANGE_MIN_GAP_S = 5.0
"""A change of sessions, free cache or neighbours is announced at most this long (or half
the announce period, if shorter) after the previous announcement started; changes in
between go out together. Announcing costs CPU (a signature, a DHT walk and stores, in
Python) that a span computing on the same cores feels: announcing every session's open
and close slowed the prefill steps after them up to 3x on 2 cores (docs/performance.md)."""

CHANGE_MAX_WAIT_S = 15.0
"""A change also waits for a quiet moment (no step for `receipt_writer.QUIET_S`), but at
most this long: a server busy with back-to-back sessions announces between them."""


@dataclass
class ServeOptions:
    model: str
    data_dir: Path
    identity_file: Path
    shards: tuple[int, int] | None = None  # None: choose automatically
    num_blocks: int | None = None  # with automatic choice: at most this many blocks
    host: str = "127.0.0.1"
    announce_host: str | None = None
    port: int = 0  # libp2p (DHT) port
    data_port: int = 0
    initial_peers: list[str] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "auto"
    max_sessions: int = 64
    cache_tokens: int = 16384
    idle_timeout: float = 300.0
    announce_period: float = 30.0
    rebalance_period: float = 300.0
    rebalance: bool = True
    json: bool = False
    refresh_throughput: bool = False
    emulate_latency: tuple[float, float] = (0.0, 0.0)  # testing only: (delay, jitter) s
    inject_fault: str | None = None  # TESTING ONLY: plexus.verification.faults
    ledger_url: str | None = None  # default: sqlite under data_dir


def parse_shards(text: str | None) -> tuple[int, int] | None:
    """'0-20' -> (0, 20); '5' -> (5, 5); None or 'auto' -> None."""
    if text is None or text == "auto":
        return None
    try:
        start, _, end = text.partition("-")
        span = (int(start), int(end or start))
    except ValueError:
        raise ConfigError(f"--shards must look like 0-20 or auto, not {text!r}") from None
    if span[0] < 0 or span[1] < span[0]:
        raise ConfigError(f"--shards {text}: need 0 <= start <= end")
    return span


def default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def blocks_that_fit(files: ModelFiles, dtype: torch.dtype, device: str, cache_tokens: int) -> int:
    """How many blocks (with their share of the KV-cache budget) fit this device."""
    from plexus.models.checkpoint import read_header

    prefix = "model.layers.0."
    wmap = files.files_for([n for n in files.weight_map if n.startswith(prefix)])
    params = 0
    for file_name in sorted({wmap[n] for n in wmap if n.startswith(prefix)}):
        params += sum(
            e.nbytes // e.dtype.itemsize
            for name, e in read_header(files.folder / file_name).items()
            if name.startswith(prefix)
        )
    block_bytes = params * torch.empty((), dtype=dtype).element_size()
    kv = memory.kv_bytes_per_token(files.config, dtype, 1) * cache_tokens
    usable = memory.device_memory(device).usable_bytes
    return max(0, min(files.config.num_hidden_layers, usable // max(1, block_bytes + kv)))


def coverage_of(records: list[ServerRecord], exclude: str | None = None) -> list[Coverage]:
    return [Coverage(r.start, r.end, r.throughput) for r in records if r.peer_id != exclude]


async def serve(opts: ServeOptions, announce_ready: Callable[[dict], None]) -> int:
    identity = Identity.load_or_create(opts.identity_file)
    files = open_model(opts.model, opts.data_dir)
    model_id = files.model_id
    n_layers = files.config.num_hidden_layers
    device = memory.pick_device(opts.device)
    from plexus.models.loading import parse_dtype

    dtype = parse_dtype(opts.dtype) or default_dtype(device)
    dtype_name = str(dtype).removeprefix("torch.")

    async with DHTNode.open(
        identity, opts.host, opts.port, opts.initial_peers, announce_host=opts.announce_host
    ) as node:
        if opts.shards is not None:
            start, end = opts.shards
            if end >= n_layers:
                raise ConfigError(
                    f"--shards {start}-{end}: {opts.model} has blocks 0-{n_layers - 1}"
                )
        else:
            fit = blocks_that_fit(files, dtype, device, opts.cache_tokens)
            if fit == 0:
                raise ConfigError("not even one block fits this device's free memory")
            length = min(fit, opts.num_blocks or fit)
            swarm = await node.find_servers(model_id)
            start, end = choose_span(n_layers, length, coverage_of(swarm, identity.peer_id_str))
            log.info(
                "chose blocks %d-%d (%d fit in memory; %d servers seen)",
                start,
                end,
                fit,
                len(swarm),
            )
        span = await trio.to_thread.run_sync(
            lambda: load_span(files, start, end, dtype=dtype, device=device)
        )
        device_name = memory.device_memory(device).name
        throughput = cached_throughput(
            span, model_id, device_name, opts.data_dir / "cache", opts.refresh_throughput
        )
        backend = SpanBackend(
            span,
            max_sessions=opts.max_sessions,
            cache_tokens=opts.cache_tokens,
            idle_timeout=opts.idle_timeout,
            device=device,
        )
        verifier = _make_verifier(opts, identity, model_id, span)
        handlers = BlockServerHandlers(
            backend,
            model_id,
            {"num_blocks": n_layers, "dtype": dtype_name, "throughput": throughput},
            verifier,
        )
        limits = Limits(
            emulated_delay=opts.emulate_latency[0], emulated_jitter=opts.emulate_latency[1]
        )
        async with ConnectionPool.open(identity, limits) as pool, trio.open_nursery() as nursery:
            handlers.background = nursery
            handlers.forwarder = Forwarder(
                identity.peer_id_str,
                NETWORK_ID,
                model_id,
                pool,
                nursery,
                send_in_background=bool(opts.emulate_latency[0] or opts.emulate_latency[1]),
            )
            dataplane = await nursery.start(
                partial(
                    serve_dataplane,
                    on_disconnect=_dropper(backend),
                    limits=limits,
                ),
                identity,
                opts.host,
                opts.data_port,
                handlers.router,
            )
            data_host = opts.announce_host or opts.host
            data_addr = f"{data_host}:{dataplane.port}"
            nursery.start_soon(backend.run)
            nursery.start_soon(backend.reap_idle)
            if verifier.ledger is not None:
                verifier.writer = ReceiptWriter(verifier.ledger, backend.activity)
                nursery.start_soon(verifier.writer.run)  # stores what waits when cancelled
                nursery.start_soon(_gossip, node, verifier)
                balances = BalanceBook(verifier.ledger)
                backend.priority = balances
                nursery.start_soon(balances.refresh_forever)

            next_rtts: dict[str, float] = {}  # ms to the servers this span feeds

            def record() -> ServerRecord:
                return make_record(
                    identity,
                    model_id=model_id,
                    start=backend.span.start,
                    end=backend.span.end,
                    throughput=throughput,
                    free_cache_tokens=backend.free_cache_tokens,
                    dtype=dtype_name,
                    data_addr=data_addr,
                    ttl=2 * opts.announce_period,
                    num_blocks=n_layers,
                    extra={
                        "sessions": len(backend.sessions),
                        "max_sessions": backend.max_sessions,
                        "model": opts.model[:128],
                        **({"next_rtt_ms": dict(next_rtts)} if next_rtts else {}),
                    },
                )

            await node.announce(record())
            announce_ready(
                {
                    "multiaddrs": node.multiaddrs,
                    "peer_id": identity.peer_id_str,
                    "data_addr": data_addr,
                    "model_id": model_id,
                    "start": start,
                    "end": end,
                    "throughput": throughput,
                    "version": __version__,
                }
            )
            nursery.start_soon(
                _announce_loop, node, backend, record, opts.announce_period, next_rtts.keys
            )
            nursery.start_soon(
                neighbours.measure_forever,
                node,
                pool,
                model_id,
                lambda: backend.span.end,
                next_rtts,
                opts.announce_period,
            )
            if opts.rebalance and opts.shards is None:
                nursery.start_soon(_rebalance_loop, node, backend, record, opts, files, throughput)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info(
                        "received %s: withdrawing and shutting down", signal.Signals(signum).name
                    )
                    break
            backend.accepting = False
            with trio.move_on_after(5):
                await node.withdraw()
            nursery.cancel_scope.cancel()
    return 0


def _make_verifier(
    opts: ServeOptions, identity: Identity, model_id: str, span: torch.nn.Module
) -> ServerVerifier:
    """Commitments and receipts (always), the ledger, and an injected fault (tests)."""
    from ledger import LedgerStore
    from ledger.engine import sqlite_url
    from plexus.verification.faults import Fault

    fault = Fault.parse(opts.inject_fault) if opts.inject_fault else None
    if fault is not None:
        banner = "!" * 78
        log.warning(
            "\n%s\n!!! TESTING ONLY: --inject-fault %s: this server deliberately returns "
            "WRONG results\n!!! (or crashes, or stalls). Clients will audit it, convict it and "
            "publish fraud proofs.\n%s",
            banner,
            fault,
            banner,
        )
    url = opts.ledger_url or sqlite_url(opts.data_dir / "ledger.sqlite")
    ledger = LedgerStore(url, NETWORK_ID)
    blocks = max(1, int(getattr(span, "num_blocks", 1)))
    params = sum(p.numel() for p in span.parameters()) // blocks
    return ServerVerifier(identity, model_id, params_per_block=params, fault=fault, ledger=ledger)


async def _gossip(node: DHTNode, verifier: ServerVerifier) -> None:
    """Receive (validate, store, relay) gossiped receipts and fraud proofs until shutdown."""
    from plexus.p2p.ledger_gossip import LedgerGossip
    from plexus.verification.proofs import check_fraud_proof

    assert verifier.ledger is not None
    async with LedgerGossip.open(node.host, verifier.ledger, check_fraud_proof):
        await trio.sleep_forever()


async def _announce_loop(
    node: DHTNode,
    backend: SpanBackend,
    record: Callable[[], ServerRecord],
    period: float,
    neighbours_measured: Callable[[], Iterable[str]] = tuple,
) -> None:
    """Announce every `period` (counted from the start of the previous announcement, so
    a slow DHT does not stretch the interval past the record's lifetime), and soon after
    the number of sessions or the free cache changes (but see CHANGE_MIN_GAP_S and
    CHANGE_MAX_WAIT_S).
    Announcements run in the background, at most two at a time, so one stuck on a dead
    peer does not delay the next."""

    def state() -> tuple[int, int, frozenset[str]]:
        return len(backend.sessions), backend.free_cache_tokens, frozenset(neighbours_measured())

    last_state = state()
    next_due = trio.current_time() + period  # a period after the last one started
    change_gap = min(CHANGE_MIN_GAP_S, period / 2)
    changed_at: float | None = None  # when the state first differed from the announced one
    in_flight = 0

    async def announce_once() -> None:
        nonlocal in_flight
        in_flight += 1
        started = trio.current_time()
        try:
            # Never cut an announcement before its RPCs time out: a dead peer is forgotten
            # only when an RPC to it times out, and until then it stalls every walk.
            with trio.move_on_after(max(2 * period, node.config.operation_timeout)):
                await node.announce(record())
        except Exception as exc:  # announce errors must not stop serving
            log.warning("announce failed: %s", exc)
        finally:
            in_flight -= 1
        took = trio.current_time() - started
        if took > period:
            log.info("announcing took %.1f s, longer than the period of %.1f s", took, period)

    async with trio.open_nursery() as nursery:
        while True:
            await trio.sleep_until(min(next_due, trio.current_time() + 0.5))
            current = state()
            now = trio.current_time()
            if current == last_state:
                changed_at = None
            elif changed_at is None:
                changed_at = now
            changed = (
                changed_at is not None
                and now - (next_due - period) >= change_gap
                and (
                    backend.activity.quiet_for() >= QUIET_S or now - changed_at >= CHANGE_MAX_WAIT_S
                )
            )
            if (changed or now >= next_due) and in_flight < 2:
                last_state, next_due, changed_at = current, now + period, None
                nursery.start_soon(announce_once)


async def _rebalance_loop(
    node: DHTNode,
    backend: SpanBackend,
    record: Callable[[], ServerRecord],
    opts: ServeOptions,
    files: ModelFiles,
    throughput: float,
) -> None:
    """Move to a span where the swarm is weaker, when that clearly helps."""
    rng = random.Random()
    while True:
        # Jitter so that servers do not all move at once.
        await trio.sleep(opts.rebalance_period * rng.uniform(0.8, 1.2))
        if backend.sessions:
            continue  # never drop sessions to move
        swarm = await node.find_servers(node_model_id(record))
        mine = Coverage(backend.span.start, backend.span.end, throughput)
        others = coverage_of(swarm, node.peer_id)
        target = should_move(files.config.num_hidden_layers, mine, others, rng=rng)
        if target is None:
            continue
        log.info("rebalancing: moving from %d-%d to %d-%d", mine.start, mine.end, *target)
        new_span = await trio.to_thread.run_sync(
            lambda t=target: load_span(
                files, t[0], t[1], dtype=backend.span_dtype, device=backend.device
            )
        )
        backend.replace_span(new_span)
        await node.announce(record())


def _dropper(backend: SpanBackend) -> Callable[[str], None]:
    """A client that disconnected will not come back for its caches: free them."""

    def drop(peer_id: str) -> None:
        if n := backend.close_sessions_of(peer_id):
            log.info("client %s disconnected; dropped its %d session(s)", peer_id, n)

    return drop


def node_model_id(record: Callable[[], ServerRecord]) -> str:
    return record().model_id


def print_ready(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, sort_keys=True), flush=True)
    else:
        for addr in info["multiaddrs"]:
            print(addr, flush=True)
        print(
            f"serving blocks {info['start']}-{info['end']} of {info['model_id'][:19]}... "
            f"on data plane {info['data_addr']} ({info['throughput']:.1f} tokens/s per block)",
            file=sys.stderr,
            flush=True,
        )
