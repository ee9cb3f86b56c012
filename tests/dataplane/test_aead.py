"""In-place ChaCha20-Poly1305 with counter nonces: interoperates with PyNaCl's own binding,
and refuses tampered, reordered and replayed frames."""

from __future__ import annotations

import os

import pytest
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt

from plexus.p2p.dataplane.aead import TAG_BYTES, DirectionalCipher, nonce_for
from plexus.p2p.dataplane.errors import WireError


def sealed(cipher: DirectionalCipher, plain: bytes, aad: bytes) -> bytearray:
    frame = bytearray(plain) + bytearray(TAG_BYTES)
    cipher.seal_in_place(memoryview(frame), len(plain), aad)
    return frame


def test_matches_the_reference_construction_and_counts_nonces() -> None:
    key = os.urandom(32)
    cipher = DirectionalCipher(key)
    for counter in range(3):
        plain = os.urandom(100 + counter)
        frame = sealed(cipher, plain, b"aad!")
        reference = crypto_aead_chacha20poly1305_ietf_encrypt(
            plain, b"aad!", nonce_for(counter), key
        )
        assert bytes(frame) == reference
    assert cipher.counter == 3
    assert nonce_for(1) == bytes(4) + (1).to_bytes(8, "little")


def test_round_trip_in_place() -> None:
    key = os.urandom(32)
    sender, receiver = DirectionalCipher(key), DirectionalCipher(key)
    for size in (0, 1, 4096, 1 << 20):
        plain = os.urandom(size)
        frame = sealed(sender, plain, b"\x00\x00\x00\x01")
        assert receiver.open_in_place(memoryview(frame), b"\x00\x00\x00\x01") == size
        assert frame[:size] == plain


@pytest.mark.parametrize("what", ["ciphertext", "tag", "aad", "key"])
def test_tampering_is_detected(what: str) -> None:
    key = os.urandom(32)
    frame = sealed(DirectionalCipher(key), b"hidden states", b"head")
    aad = b"head"
    receiver = DirectionalCipher(key)
    if what == "ciphertext":
        frame[0] ^= 1
    elif what == "tag":
        frame[-1] ^= 0x80
    elif what == "aad":
        aad = b"heaD"
    else:
        receiver = DirectionalCipher(os.urandom(32))
    with pytest.raises(WireError) as info:
        receiver.open_in_place(memoryview(frame), aad)
    assert info.value.fatal


def test_reordered_or_replayed_frames_fail() -> None:
    key = os.urandom(32)
    sender = DirectionalCipher(key)
    first, second = sealed(sender, b"one", b""), sealed(sender, b"two", b"")
    receiver = DirectionalCipher(key)
    with pytest.raises(WireError):
        receiver.open_in_place(memoryview(bytearray(second)), b"")  # expected counter 0
    replaying = DirectionalCipher(key)
    assert replaying.open_in_place(memoryview(bytearray(first)), b"") == 3
    with pytest.raises(WireError):
        replaying.open_in_place(memoryview(bytearray(first)), b"")  # counter 1 now


def test_rejects_bad_sizes() -> None:
    cipher = DirectionalCipher(os.urandom(32))
    with pytest.raises(ValueError):
        cipher.seal_in_place(memoryview(bytearray(10)), 10, b"")  # no room for the tag
    with pytest.raises(WireError):
        cipher.open_in_place(memoryview(bytearray(5)), b"")
    with pytest.raises(ValueError):
        DirectionalCipher(b"short")
