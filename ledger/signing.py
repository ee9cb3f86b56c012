"""Ed25519 signatures with domain separation, on raw 32-byte public keys.

Every signature the ledger makes or checks is over `domain(tag) + body`, where the tag names
the object and the signer's role (e.g. `receipt/v1/server`). A signature made for one role or
object type therefore never verifies as another, even when one key plays both roles. The
network id is a field of every body, so signatures never carry over between networks either.
"""

from __future__ import annotations

from functools import lru_cache

import nacl.bindings
import nacl.exceptions
import nacl.signing

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_PREFIX = b"plexus/ledger/"


@lru_cache(maxsize=64)
def domain(tag: str) -> bytes:
    """The prefix signed before a body: `plexus/ledger/<tag>` and a NUL byte."""
    return _PREFIX + tag.encode("ascii") + b"\x00"


def public_key(signing_key: nacl.signing.SigningKey) -> bytes:
    """The raw 32-byte public key of a pynacl signing key."""
    return bytes(signing_key.verify_key)


def sign(signing_key: nacl.signing.SigningKey, tag: str, body: bytes) -> bytes:
    """A 64-byte detached Ed25519 signature of `domain(tag) + body`."""
    return signing_key.sign(domain(tag) + body).signature


def verify(public: bytes, tag: str, body: bytes, signature: bytes) -> bool:
    """True iff `signature` is `public`'s signature of `domain(tag) + body`.

    libsodium's verifier is strict: it refuses non-canonical signatures and small-order keys,
    so a valid signature cannot be re-encoded into a second valid one.
    """
    if len(public) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + domain(tag) + body, public)
    except (nacl.exceptions.CryptoError, ValueError):
        return False
    return True
