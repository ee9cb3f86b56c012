"""Mutually authenticated key agreement bound to both peer ids (docs/protocol.md, Part 2).

Three fixed-size messages, dialer C to listener S:

  msg1  C->S   72 B   "PXDP" | version | flags | 0x0000 | C ephemeral X25519 | S Ed25519 key
                      C expects to reach
  msg2  S->C  136 B   "PXDP" | version | flags | 0x0000 | S ephemeral X25519 | S Ed25519 key
                      | S signature of "plexus-dataplane/1 server" || H(P || msg1 || msg2[:72])
  msg3  C->S   96 B   C Ed25519 key | C signature of
                      "plexus-dataplane/1 client" || H(P || msg1 || msg2 || C key)

P is b"plexus-dataplane/1" and H is BLAKE2b-256. Both sides derive
BLAKE2b-512(key=X25519 shared secret, person=b"pxdp-v1-keys", data=P || msg1 || msg2 || msg3)
and use bytes 0-31 for client-to-server frames, bytes 32-63 for server-to-client frames.

Timeouts are the caller's job (the whole handshake runs under one deadline).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import nacl.exceptions
from nacl.bindings import crypto_scalarmult
from nacl.encoding import RawEncoder
from nacl.hash import blake2b
from nacl.public import PrivateKey

from plexus.identity import Identity, peer_id_of, public_key_of, verify
from plexus.p2p.dataplane.aead import DirectionalCipher
from plexus.p2p.dataplane.errors import HandshakeError
from plexus.p2p.dataplane.stream import BufferedReceiver, ByteStream

PROTOCOL = b"plexus-dataplane/1"
MAGIC = b"PXDP"
VERSION = 1
PREFIX = struct.Struct(">4sBBH")  # magic, version, flags, reserved
MSG1_BYTES = PREFIX.size + 32 + 32
MSG2_BYTES = PREFIX.size + 32 + 32 + 64
MSG3_BYTES = 32 + 64
SERVER_CONTEXT = b"plexus-dataplane/1 server"
CLIENT_CONTEXT = b"plexus-dataplane/1 client"
KDF_PERSON = b"pxdp-v1-keys"


@dataclass(frozen=True)
class SessionKeys:
    """The outcome of a handshake: who the peer is and the two directional ciphers."""

    peer_id: str
    peer_public_key: bytes
    sender: DirectionalCipher
    receiver: DirectionalCipher


def _hash(data: bytes) -> bytes:
    return blake2b(data, digest_size=32, encoder=RawEncoder)


def _shared_secret(private: PrivateKey, peer_ephemeral: bytes) -> bytes:
    try:
        shared = crypto_scalarmult(bytes(private), peer_ephemeral)
    except nacl.exceptions.CryptoError as exc:  # libsodium refuses low-order points
        raise HandshakeError("peer sent a degenerate ephemeral key") from exc
    if shared == bytes(32):
        raise HandshakeError("peer sent a degenerate ephemeral key")
    return shared


def _derive(shared: bytes, transcript: bytes, *, client: bool) -> tuple[bytes, bytes]:
    """(send key, receive key) for this side."""
    okm = blake2b(
        PROTOCOL + transcript, digest_size=64, key=shared, person=KDF_PERSON, encoder=RawEncoder
    )
    c2s, s2c = okm[:32], okm[32:]
    return (c2s, s2c) if client else (s2c, c2s)


def _check_prefix(data: bytes, who: str) -> None:
    magic, version, _flags, _reserved = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise HandshakeError(f"{who} does not speak the Plexus data plane (bad magic)")
    if version != VERSION:
        raise HandshakeError(f"{who} speaks data-plane version {version}, this side {VERSION}")


async def client_handshake(
    stream: ByteStream,
    receiver: BufferedReceiver,
    identity: Identity,
    expected_peer_id: str,
    timeout: float,
) -> SessionKeys:
    """Dialer side. Raises HandshakeError unless the listener proves it is `expected_peer_id`."""
    try:
        expected_key = public_key_of(expected_peer_id)
    except ValueError as exc:
        raise HandshakeError(str(exc)) from exc
    ephemeral = PrivateKey.generate()
    msg1 = PREFIX.pack(MAGIC, VERSION, 0, 0) + bytes(ephemeral.public_key) + expected_key
    await stream.send_all(msg1)

    msg2 = bytearray(MSG2_BYTES)
    view = memoryview(msg2)
    if not await receiver.read_exactly(view[: PREFIX.size], timeout, eof_ok=True):
        raise HandshakeError("listener closed the connection during the handshake")
    _check_prefix(msg2, "listener")
    await receiver.read_exactly(view[PREFIX.size :], timeout)
    msg2 = bytes(msg2)
    server_ephemeral = msg2[8:40]
    server_key = msg2[40:72]
    if server_key != expected_key:
        raise HandshakeError(f"reached peer {peer_id_of(server_key)}, expected {expected_peer_id}")
    if not verify(server_key, SERVER_CONTEXT + _hash(PROTOCOL + msg1 + msg2[:72]), msg2[72:]):
        raise HandshakeError(f"peer {expected_peer_id} sent an invalid handshake signature")

    own_key = identity.public_key_bytes
    signature = identity.sign(CLIENT_CONTEXT + _hash(PROTOCOL + msg1 + msg2 + own_key))
    msg3 = own_key + signature
    await stream.send_all(msg3)
    shared = _shared_secret(ephemeral, server_ephemeral)
    send_key, receive_key = _derive(shared, msg1 + msg2 + msg3, client=True)
    return SessionKeys(
        expected_peer_id, server_key, DirectionalCipher(send_key), DirectionalCipher(receive_key)
    )


async def server_handshake(
    stream: ByteStream,
    receiver: BufferedReceiver,
    identity: Identity,
    timeout: float,
) -> SessionKeys:
    """Listener side. Returns the dialer's authenticated peer id and the session keys."""
    msg1 = bytearray(MSG1_BYTES)
    view = memoryview(msg1)
    if not await receiver.read_exactly(view[: PREFIX.size], timeout, eof_ok=True):
        raise HandshakeError("dialer closed the connection before the handshake")
    magic, version, _flags, _reserved = PREFIX.unpack_from(msg1)
    if magic != MAGIC:
        raise HandshakeError("dialer does not speak the Plexus data plane (bad magic)")
    if version != VERSION:
        # Say which version this side speaks, then give up: the dialer reports the mismatch.
        await stream.send_all(PREFIX.pack(MAGIC, VERSION, 0, 0))
        raise HandshakeError(f"dialer speaks data-plane version {version}, this side {VERSION}")
    await receiver.read_exactly(view[PREFIX.size :], timeout)
    msg1 = bytes(msg1)
    client_ephemeral = msg1[8:40]
    # msg1[40:72] is the key the dialer expects; a mismatch is the dialer's to detect (it
    # gets this side's real id in msg2 and a precise error), and it is in the transcript.

    ephemeral = PrivateKey.generate()
    own_key = identity.public_key_bytes
    msg2_head = PREFIX.pack(MAGIC, VERSION, 0, 0) + bytes(ephemeral.public_key) + own_key
    msg2 = msg2_head + identity.sign(SERVER_CONTEXT + _hash(PROTOCOL + msg1 + msg2_head))
    await stream.send_all(msg2)

    msg3 = bytearray(MSG3_BYTES)
    await receiver.read_exactly(memoryview(msg3), timeout)
    msg3 = bytes(msg3)
    client_key, signature = msg3[:32], msg3[32:]
    if not verify(
        client_key, CLIENT_CONTEXT + _hash(PROTOCOL + msg1 + msg2 + client_key), signature
    ):
        raise HandshakeError("dialer sent an invalid handshake signature")
    try:
        client_peer_id = peer_id_of(client_key)
    except Exception as exc:  # libp2p key parsing raises several types
        raise HandshakeError("dialer sent an unusable identity key") from exc
    shared = _shared_secret(ephemeral, client_ephemeral)
    send_key, receive_key = _derive(shared, msg1 + msg2 + msg3, client=False)
    return SessionKeys(
        client_peer_id, client_key, DirectionalCipher(send_key), DirectionalCipher(receive_key)
    )
