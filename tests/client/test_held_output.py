"""Streamed text and audits: text is held from the moment some server on the route is to
be audited on the request, so nothing an audit could still reject is ever shown."""

from __future__ import annotations

import os
import random

from plexus.client.audit import Auditor, HeldOutput
from plexus.client.inference import HopState
from plexus.client.planner import Hop, ServerInfo
from plexus.identity import Identity
from plexus.verification.policy import TRUST_AFTER


def test_text_flows_until_holding_starts_then_waits_for_the_verdict() -> None:
    shown: list[str] = []
    tokens: list[int] = []
    hold = [False]
    held = HeldOutput(shown.append, tokens.append, lambda: hold[0])
    assert held.on_text is not None and held.on_token == tokens.append
    held.on_text("a")
    hold[0] = True  # say, a failover brought in a server that is to be audited
    held.on_text("b")
    hold[0] = False  # once holding, the rest of the request is held too
    held.on_text("c")
    assert shown == ["a"] and held.holding
    held.release()
    assert shown == ["a", "b", "c"]
    held.on_text("d")
    held.discard()
    held.release()
    assert shown == ["a", "b", "c"]


def test_no_on_text_means_nothing_to_hold() -> None:
    held = HeldOutput(None, None, lambda: True)
    assert held.on_text is None and held.on_token is None
    held.release()


def _hop(peer: str) -> HopState:
    return HopState(Hop(ServerInfo(peer, 0, 3, 100.0), 0, 3))


def test_the_audit_is_drawn_once_before_the_output_and_kept_until_the_audit() -> None:
    auditor = Auditor(Identity.generate(os.urandom(32)), swarm=None)  # type: ignore[arg-type]
    auditor._rng = random.Random(7)  # type: ignore[assignment]  # reproducible draws
    new = _hop(Identity.generate(os.urandom(32)).peer_id_str)
    assert auditor.must_hold([new])  # a new server is audited on every request
    trusted = _hop(Identity.generate(os.urandom(32)).peer_id_str)
    auditor.clean[trusted.hop.peer_id] = 1000 * TRUST_AFTER  # audited at the 2% floor
    draws = [auditor.must_hold([trusted]) for _ in range(50)]
    assert len(set(draws)) == 1  # drawn once: asking again changes nothing
    assert trusted.audit.due is draws[0]
    decided = set()
    for _ in range(400):  # as audit_hop does after each request: draw again
        trusted.audit.due = None
        decided.add(auditor.must_hold([trusted]))
    assert decided == {True, False}  # about 8 audits in 400 requests
