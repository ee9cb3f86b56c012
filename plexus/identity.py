"""A peer's one Ed25519 key: libp2p peer id, DHT record signatures, data-plane
authentication and ledger receipts all use it.

The key lives in a file (mode 0600, libp2p's protobuf format) created on first use.
Peer ids (`12D3KooW...`) embed the public key, so anything signed by a peer can be
checked against its id alone: see `public_key_of` and `verify`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import nacl.exceptions
import nacl.signing
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID

from plexus.errors import ConfigError

IDENTITY_FILE_NAME = "identity.key"


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair and everything derived from it."""

    key_pair: KeyPair

    @classmethod
    def generate(cls, seed: bytes | None = None) -> Identity:
        return cls(create_new_key_pair(seed))

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the key at `path`, creating it (mode 0600) if the file does not exist."""
        path = Path(path).expanduser()
        if path.exists():
            try:
                key_pair = load_identity(path)
            except ValueError as exc:
                raise ConfigError(f"identity file {path} is unreadable: {exc}") from exc
            if not isinstance(key_pair.public_key, Ed25519PublicKey):
                raise ConfigError(f"identity file {path} does not hold an Ed25519 key")
            return cls(key_pair)
        path.parent.mkdir(parents=True, exist_ok=True)
        identity = cls.generate(os.urandom(32))
        save_identity(identity.key_pair, path)
        os.chmod(path, 0o600)
        return identity

    @cached_property
    def peer_id(self) -> ID:
        return ID.from_pubkey(self.key_pair.public_key)

    @property
    def peer_id_str(self) -> str:
        return self.peer_id.to_base58()

    @cached_property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.key_pair.private_key.to_bytes()[:32])

    @property
    def public_key_bytes(self) -> bytes:
        return self.key_pair.public_key.to_bytes()

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature of `data`."""
        return self.signing_key.sign(data).signature


@lru_cache(maxsize=4096)
def public_key_of(peer_id: str) -> bytes:
    """The raw 32-byte Ed25519 public key embedded in a `12D3KooW...` peer id."""
    try:
        key = ID.from_base58(peer_id).extract_public_key()
    except Exception as exc:  # base58/protobuf decoding raises many types
        raise ValueError(f"not an Ed25519 peer id: {peer_id!r}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 peer id: {peer_id!r}")
    return key.to_bytes()


def peer_id_of(public_key: bytes) -> str:
    """The peer id for a raw 32-byte Ed25519 public key."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key)).to_base58()


def verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `data`."""
    try:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
        return False
    return True
