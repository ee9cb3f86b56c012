"""ChaCha20-Poly1305 (IETF, RFC 8439) for one direction of a connection, in place.

PyNaCl's public binding takes and returns `bytes`, which costs two extra copies of every
frame; libsodium itself encrypts and decrypts in place, so this module calls it through
PyNaCl's cffi handle (`nacl._sodium`, present in every PyNaCl 1.x) on caller buffers.

Nonce: 4 zero bytes followed by the 64-bit little-endian frame counter of this direction,
starting at 0. Each direction has its own key, so a (key, nonce) pair is never reused.
"""

from __future__ import annotations

from nacl._sodium import ffi, lib

from plexus.p2p.dataplane.codes import ErrorCode
from plexus.p2p.dataplane.errors import WireError

Buffer = bytes | bytearray | memoryview
KEY_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12
_MAX_COUNTER = (1 << 64) - 1

if (
    lib.crypto_aead_chacha20poly1305_ietf_abytes() != TAG_BYTES
    or lib.crypto_aead_chacha20poly1305_ietf_npubbytes() != NONCE_BYTES
    or lib.crypto_aead_chacha20poly1305_ietf_keybytes() != KEY_BYTES
):  # pragma: no cover - would mean a different libsodium construction
    raise ImportError("libsodium's chacha20poly1305_ietf has unexpected sizes")


def nonce_for(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")


class DirectionalCipher:
    """A key and its counter nonce; seals (or opens) frames strictly in order."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("key must be 32 bytes")
        self._key = bytes(key)
        self._counter = 0
        self._length = ffi.new("unsigned long long *")

    @property
    def counter(self) -> int:
        """The counter the next frame will use."""
        return self._counter

    def _next_nonce(self) -> bytes:
        if self._counter >= _MAX_COUNTER:
            raise WireError("frame counter exhausted", ErrorCode.INTERNAL, fatal=True)
        nonce = nonce_for(self._counter)
        self._counter += 1
        return nonce

    def seal_in_place(self, frame: memoryview, plain_len: int, aad: bytes) -> None:
        """Encrypt `frame[:plain_len]` in place and write the tag to the next 16 bytes."""
        if len(frame) != plain_len + TAG_BYTES:
            raise ValueError("frame must have exactly 16 bytes of room for the tag")
        pointer = ffi.from_buffer(frame, require_writable=True)
        rc = lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            pointer, self._length, pointer, plain_len, aad, len(aad), ffi.NULL,
            self._next_nonce(), self._key,
        )  # fmt: skip
        if rc != 0:  # pragma: no cover - libsodium only fails on oversized input
            raise WireError("encryption failed", ErrorCode.INTERNAL, fatal=True)

    def seal_into(self, out: memoryview, plain: Buffer, aad: bytes) -> None:
        """Encrypt `plain` into `out` (ciphertext then tag: len(plain) + 16 bytes).

        Saves the copy into the frame buffer when a frame's plaintext is one contiguous
        slice of a tensor.
        """
        if len(out) != len(plain) + TAG_BYTES:
            raise ValueError("out must be exactly 16 bytes longer than plain")
        rc = lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            ffi.from_buffer(out, require_writable=True), self._length,
            ffi.from_buffer(plain), len(plain), aad, len(aad), ffi.NULL,
            self._next_nonce(), self._key,
        )  # fmt: skip
        if rc != 0:  # pragma: no cover - libsodium only fails on oversized input
            raise WireError("encryption failed", ErrorCode.INTERNAL, fatal=True)

    def open_in_place(self, frame: memoryview, aad: bytes) -> int:
        """Verify and decrypt `frame` (ciphertext + tag) in place; return the plaintext length.

        A forged, reordered, replayed or truncated frame raises a fatal WireError.
        """
        if len(frame) < TAG_BYTES:
            raise WireError("frame shorter than its tag", fatal=True)
        pointer = ffi.from_buffer(frame, require_writable=True)
        rc = lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            pointer, self._length, ffi.NULL, pointer, len(frame), aad, len(aad),
            self._next_nonce(), self._key,
        )  # fmt: skip
        if rc != 0:
            raise WireError("frame failed authentication", ErrorCode.MALFORMED, fatal=True)
        return len(frame) - TAG_BYTES
