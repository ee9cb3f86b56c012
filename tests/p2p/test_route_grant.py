"""Route grants: signed by the client, refused when forged, tampered or malformed."""

from __future__ import annotations

import json
import os

import pytest

from plexus.identity import Identity
from plexus.p2p.route_grant import (
    MAX_GRANT_BYTES,
    MAX_HOPS,
    GrantError,
    GrantHop,
    RouteGrant,
    read_grant,
    sign_grant,
)


def ident() -> Identity:
    return Identity.generate(os.urandom(32))


CLIENT, A, B = ident(), ident(), ident()


def grant(seq: int = 1, hops: tuple[GrantHop, ...] | None = None) -> RouteGrant:
    hops = hops or (
        GrantHop(A.peer_id_str, "aa" * 16, 0, 3, "127.0.0.1:4000"),
        GrantHop(B.peer_id_str, "bb" * 16, 4, 7, "127.0.0.1:4001"),
    )
    return RouteGrant("plexus-main", "sha256:m", CLIENT.peer_id_str, seq, hops)


def fields_of(payload: dict | bytes, signer: Identity = CLIENT) -> dict[str, str]:
    from plexus.p2p.route_grant import GRANT_DOMAIN

    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {"route": raw.decode(), "route_sig": signer.sign(GRANT_DOMAIN + raw).hex()}


def test_round_trip_names_neighbours() -> None:
    signed = sign_grant(grant(), CLIENT)
    back = read_grant(signed.fields(), CLIENT.peer_id_str)
    assert back.grant == grant()
    assert back.grant.index_of(B.peer_id_str, "bb" * 16) == 1
    assert back.grant.index_of(B.peer_id_str, "aa" * 16) is None
    # canonical bytes: the same grant always encodes the same way
    assert sign_grant(grant(), CLIENT).payload == signed.payload


def test_only_the_client_can_sign_its_route() -> None:
    with pytest.raises(ValueError):
        sign_grant(grant(), A)
    signed = sign_grant(grant(), CLIENT)
    # sent by another peer than the one who signed: the signature does not verify
    with pytest.raises(GrantError, match="signature"):
        read_grant(signed.fields(), A.peer_id_str)
    # signed by A, naming CLIENT as the client
    forged = fields_of(signed.payload, signer=A)
    with pytest.raises(GrantError, match="signature"):
        read_grant(forged, CLIENT.peer_id_str)
    # signed by A, naming CLIENT, sent by A: the grant names another client
    with pytest.raises(GrantError, match="another client"):
        read_grant(forged, A.peer_id_str)


def test_tampering_breaks_the_signature() -> None:
    signed = sign_grant(grant(), CLIENT)
    fields = signed.fields()
    fields["route"] = fields["route"].replace("127.0.0.1:4001", "10.0.0.9:4001")
    with pytest.raises(GrantError, match="signature"):
        read_grant(fields, CLIENT.peer_id_str)
    flipped = bytearray(signed.signature)
    flipped[0] ^= 1
    with pytest.raises(GrantError, match="signature"):
        read_grant({**signed.fields(), "route_sig": flipped.hex()}, CLIENT.peer_id_str)
    for bad in ({}, {"route": 5, "route_sig": "00"}, {**signed.fields(), "route_sig": "zz"}):
        with pytest.raises(GrantError):
            read_grant(bad, CLIENT.peer_id_str)  # type: ignore[arg-type]
    with pytest.raises(GrantError, match="64 bytes"):
        read_grant({**signed.fields(), "route_sig": "00" * 63}, CLIENT.peer_id_str)


def body() -> dict:
    return json.loads(grant().payload())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b.update(v=2), "version"),
        (lambda b: b.pop("seq"), "members"),
        (lambda b: b.update(extra=1), "members"),
        (lambda b: b.update(seq=-1), "seq"),
        (lambda b: b.update(seq=1.5), "seq"),
        (lambda b: b.update(model_id=""), "model_id"),
        (lambda b: b.update(hops=[]), "hops"),
        (lambda b: b.update(hops="x"), "hops"),
        (lambda b: b["hops"][0].update(start=5), "start"),
        (lambda b: b["hops"][0].update(end=True), "start"),
        (lambda b: b["hops"][1].update(start=5), "consecutive"),
        (lambda b: b["hops"][0].update(addr=""), "addr"),
        (lambda b: b["hops"][0].update(addr="h" * 301), "addr"),
        (lambda b: b["hops"][0].update(session_id=7), "session_id"),
        (lambda b: b["hops"][0].pop("addr"), "exactly"),
    ],
)
def test_malformed_grants_are_refused(change, reason: str) -> None:  # type: ignore[no-untyped-def]
    b = body()
    change(b)
    with pytest.raises(GrantError, match=reason):
        read_grant(fields_of(b), CLIENT.peer_id_str)


def test_size_limits() -> None:
    many = tuple(
        GrantHop(A.peer_id_str, f"{i:032x}", i, i, "127.0.0.1:1") for i in range(MAX_HOPS + 1)
    )
    b = json.loads(grant(hops=many).payload())
    with pytest.raises(GrantError, match="hops"):
        read_grant(fields_of(b), CLIENT.peer_id_str)
    huge = fields_of(b" " * (MAX_GRANT_BYTES + 1))
    with pytest.raises(GrantError, match="bytes"):
        read_grant(huge, CLIENT.peer_id_str)
    for text in (b"[1]", b"not json", b'{"v": NaN}', b'{"v":1,"v":1}', b"[" * 100000):
        with pytest.raises(GrantError):
            read_grant(fields_of(text), CLIENT.peer_id_str)
