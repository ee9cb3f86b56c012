"""Route grants: the client's signed word on which servers feed which (docs/protocol.md,
Part 5).

With server-to-server forwarding a server sends its span's output straight to the next
server of the client's route. The client hands every server of the route a *grant*: the
whole chain (peer ids, their session ids, spans and data-plane addresses) signed with the
client's key. A server forwards only to the hop after its own entry, and accepts forwarded
input for a session only from the hop before it (or from the session's owner), so nobody
but the client decides where its hidden states go.

Encoding: canonical JSON (compact, sorted keys, UTF-8), signed with Ed25519 over
`plexus/route/v1` NUL || the exact bytes.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from plexus.errors import ProtocolError
from plexus.identity import Identity, public_key_of
from plexus.server.errors import ServerCode

GRANT_VERSION = 1
GRANT_DOMAIN = b"plexus/route/v1\x00"
MAX_GRANT_BYTES = 16 * 1024
MAX_HOPS = 64
MAX_ADDRESS_LENGTH = 300
_MEMBERS = {"v", "network_id", "model_id", "client", "seq", "hops"}
_HOP_MEMBERS = {"peer_id", "session_id", "start", "end", "addr"}


class GrantError(ProtocolError):
    """A route grant is malformed, forged, stale or does not name this session."""

    def __init__(self, message: str) -> None:
        super().__init__(f"route grant refused: {message}", int(ServerCode.MALFORMED_REQUEST))


@dataclass(frozen=True)
class GrantHop:
    peer_id: str
    session_id: str
    start: int
    end: int
    addr: str


@dataclass(frozen=True)
class RouteGrant:
    network_id: str
    model_id: str
    client: str  # the client's peer id: the signer
    seq: int  # strictly increasing per session; a newer grant replaces an older one
    hops: tuple[GrantHop, ...]

    def payload(self) -> bytes:
        body = {
            "v": GRANT_VERSION,
            "network_id": self.network_id,
            "model_id": self.model_id,
            "client": self.client,
            "seq": self.seq,
            "hops": [
                {
                    "peer_id": h.peer_id,
                    "session_id": h.session_id,
                    "start": h.start,
                    "end": h.end,
                    "addr": h.addr,
                }
                for h in self.hops
            ],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def index_of(self, peer_id: str, session_id: str) -> int | None:
        for i, hop in enumerate(self.hops):
            if hop.peer_id == peer_id and hop.session_id == session_id:
                return i
        return None


@dataclass(frozen=True)
class SignedGrant:
    grant: RouteGrant
    payload: bytes
    signature: bytes

    def fields(self) -> dict[str, str]:
        """The request fields that carry it (`route`, `route_sig`)."""
        return {"route": self.payload.decode(), "route_sig": self.signature.hex()}


def sign_grant(grant: RouteGrant, identity: Identity) -> SignedGrant:
    if grant.client != identity.peer_id_str:
        raise ValueError("a grant is signed by the client it names")
    payload = grant.payload()
    if len(payload) > MAX_GRANT_BYTES:
        raise ValueError(f"route grant of {len(payload)} bytes exceeds {MAX_GRANT_BYTES}")
    return SignedGrant(grant, payload, identity.sign(GRANT_DOMAIN + payload))


def read_grant(fields: dict[str, Any], signer: str) -> SignedGrant:
    """Parse and verify the `route`/`route_sig` fields sent by peer `signer`."""
    import nacl.exceptions
    import nacl.signing

    text, sig = fields.get("route"), fields.get("route_sig")
    if not isinstance(text, str) or not isinstance(sig, str):
        raise GrantError("fields 'route' and 'route_sig' must be strings")
    payload = text.encode()
    if len(payload) > MAX_GRANT_BYTES:
        raise GrantError(f"more than {MAX_GRANT_BYTES} bytes")
    try:
        signature = bytes.fromhex(sig)
        key = public_key_of(signer)
    except ValueError:
        raise GrantError("route_sig is not hex, or the signer has no Ed25519 key") from None
    if len(signature) != 64:
        raise GrantError("route_sig must be 64 bytes")
    try:
        nacl.signing.VerifyKey(key).verify(GRANT_DOMAIN + payload, signature)
    except nacl.exceptions.BadSignatureError:
        raise GrantError("signature does not verify under the sender's key") from None
    grant = _parse(payload)
    if grant.client != signer:
        raise GrantError("the grant names another client")
    return SignedGrant(grant, payload, signature)


def _parse(payload: bytes) -> RouteGrant:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise GrantError("duplicate member")
        return dict(pairs)

    try:
        body = json.loads(payload, object_pairs_hook=no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise GrantError("not JSON") from None
    if not isinstance(body, dict) or set(body) != _MEMBERS:
        raise GrantError(f"members must be exactly {sorted(_MEMBERS)}")
    if body["v"] != GRANT_VERSION or type(body["v"]) is not int:
        raise GrantError(f"unsupported version {body['v']!r}")
    for name in ("network_id", "model_id", "client"):
        if not isinstance(body[name], str) or not 0 < len(body[name]) <= 256:
            raise GrantError(f"{name} must be a string of 1-256 characters")
    seq = body["seq"]
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise GrantError("seq must be an integer in [0, 2^63)")
    raw_hops = body["hops"]
    if not isinstance(raw_hops, list) or not 1 <= len(raw_hops) <= MAX_HOPS:
        raise GrantError(f"hops must be a list of 1-{MAX_HOPS} entries")
    hops = tuple(_hop(h) for h in raw_hops)
    for a, b in itertools.pairwise(hops):
        if b.start != a.end + 1:
            raise GrantError("hops must cover consecutive blocks")
    return RouteGrant(body["network_id"], body["model_id"], body["client"], seq, hops)


def _hop(raw: Any) -> GrantHop:
    if not isinstance(raw, dict) or set(raw) != _HOP_MEMBERS:
        raise GrantError(f"each hop must have exactly {sorted(_HOP_MEMBERS)}")
    peer, session, addr = raw["peer_id"], raw["session_id"], raw["addr"]
    start, end = raw["start"], raw["end"]
    if not isinstance(peer, str) or not 0 < len(peer) <= 128:
        raise GrantError("hop peer_id must be a string")
    if not isinstance(session, str) or not 0 < len(session) <= 64:
        raise GrantError("hop session_id must be a string of at most 64 characters")
    if type(start) is not int or type(end) is not int or not 0 <= start <= end < 2**31:
        raise GrantError("hop start/end must be integers with 0 <= start <= end")
    if not isinstance(addr, str) or not 0 < len(addr) <= MAX_ADDRESS_LENGTH:
        raise GrantError(f"hop addr must be a host:port string of at most {MAX_ADDRESS_LENGTH}")
    return GrantHop(peer, session, start, end, addr)


def _no_constant(name: str) -> Any:
    raise GrantError(f"{name} is not allowed")
