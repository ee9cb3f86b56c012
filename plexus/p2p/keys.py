"""The DHT keys Plexus uses (docs/protocol.md, Part 1, "Keys").

- `/plexus/<peer-id>`: a value key holding that peer's signed ServerRecord envelope.
- provider keys: sha2-256 multihashes naming (model, shard); servers of a model register
  as providers under their shard's key, clients ask all shards. Sharding lifts py-libp2p's
  cap of 20 providers per key per storing node to 20 * PROVIDER_SHARDS servers per model.
"""

from __future__ import annotations

import hashlib

from plexus.p2p.records import Reason, RecordRejected

DHT_NAMESPACE = "plexus"
KEY_PREFIX = f"/{DHT_NAMESPACE}/"
PROVIDER_SHARDS = 4
PROVIDER_DOMAIN = b"plexus-providers-v1\x00"
_SHA2_256_MULTIHASH_PREFIX = b"\x12\x20"


def record_key(peer_id: str) -> str:
    """The DHT key a peer's record lives under: `/plexus/<peer-id>`."""
    return KEY_PREFIX + peer_id


def peer_id_from_key(key: str) -> str:
    """The peer id named by a record key; RecordRejected(KEY_MISMATCH) if it is not one."""
    peer_id = key[len(KEY_PREFIX) :]
    if not key.startswith(KEY_PREFIX) or not peer_id or "/" in peer_id:
        raise RecordRejected(Reason.KEY_MISMATCH, f"not a record key: {key!r}")
    return peer_id


def provider_shard(peer_id: str) -> int:
    """Which provider shard a server registers in: first byte of sha256(peer id) mod N."""
    return hashlib.sha256(peer_id.encode("ascii")).digest()[0] % PROVIDER_SHARDS


def provider_key(model_id: str, shard: int) -> bytes:
    """Provider key for one shard of a model (a 34-byte sha2-256 multihash)."""
    if not 0 <= shard < PROVIDER_SHARDS:
        raise ValueError(f"shard {shard} out of range 0..{PROVIDER_SHARDS - 1}")
    digest = hashlib.sha256(
        PROVIDER_DOMAIN + model_id.encode("utf-8") + b"\x00" + str(shard).encode("ascii")
    ).digest()
    return _SHA2_256_MULTIHASH_PREFIX + digest


def provider_keys(model_id: str) -> list[bytes]:
    return [provider_key(model_id, shard) for shard in range(PROVIDER_SHARDS)]
