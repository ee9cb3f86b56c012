"""Forgetting what py-libp2p would keep: it holds stored values 24 h and providers 48 h
whatever they say (edges 5, 8), so a Plexus storing node drops records that expired and
providers that were not re-announced in time."""

from __future__ import annotations

from libp2p.kad_dht.kad_dht import KadDHT

from plexus.errors import RecordError
from plexus.p2p.keys import KEY_PREFIX
from plexus.p2p.records import CLOCK_SKEW, verify_record

_RECORD_PREFIX = KEY_PREFIX.encode()


def prune(dht: KadDHT, *, now: float, provider_ttl: float) -> tuple[int, int]:
    """Drop /plexus/ values that no longer verify (expired beyond CLOCK_SKEW) and
    provider entries older than `provider_ttl` seconds. Returns (values, providers)
    dropped."""
    store = dht.value_store.store
    values = 0
    for key in [k for k in store if k.startswith(_RECORD_PREFIX)]:
        try:
            verify_record(store[key][0].value, now=now, expiry_grace=CLOCK_SKEW)
        except RecordError:
            del store[key]
            values += 1
    providers = dht.provider_store.providers
    dropped = 0
    for key in list(providers):
        entries = providers[key]
        for peer in [p for p, entry in entries.items() if now - entry.timestamp > provider_ttl]:
            del entries[peer]
            dropped += 1
        if not entries:
            del providers[key]
    return values, dropped
