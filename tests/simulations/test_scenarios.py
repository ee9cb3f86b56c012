"""Small versions of every scenario, checked for the simulator's invariants."""

from __future__ import annotations

import pytest

from ledger import compute_balances
from simulations.peers import Role
from simulations.scenarios import SCENARIOS, config_for
from simulations.simulator import Simulation

PEERS = 200
HOURS = 1.0


@pytest.fixture(scope="module")
def runs() -> dict[str, Simulation]:
    done = {}
    for name in SCENARIOS:
        sim = Simulation(config_for(name, PEERS, HOURS, seed=7))
        sim.run()
        done[name] = sim
    return done


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_routes_only_cover_blocks_with_live_holders(runs: dict[str, Simulation], name: str) -> None:
    sim = runs[name]
    assert sim.metrics.sessions, "the scenario served no session"
    assert sim.c.route_violations == 0
    ok = [s for s in sim.metrics.sessions if s.outcome == "ok"]
    assert len(ok) >= 0.9 * len(sim.metrics.sessions)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_balances_are_zero_sum(runs: dict[str, Simulation], name: str) -> None:
    sim = runs[name]
    accounts = compute_balances(sim.ledger.receipts, sim.ledger.proofs)
    assert sum(a.earned for a in accounts.values()) == sum(a.spent for a in accounts.values())
    assert sum(a.balance for a in accounts.values()) == 0
    assert sim.c.zero_sum_violations == 0


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_convicted_peers_are_never_routed_to_again(runs: dict[str, Simulation], name: str) -> None:
    sim = runs[name]
    assert sim.c.convicted_routed == 0
    convicted = {p.name for p in sim.peers if p.convicted_at is not None}
    view = sim.router.current(sim.q.now, sim.peers)
    for region in ("eu", "asia"):
        route = sim.router.plan(view, region, 0, sim.cfg.num_blocks - 1, sim.convicted_names)
        assert not convicted & {h.peer_id for h in route.hops}
    for session in sim.sessions.values():
        assert not convicted & {h.peer.name for h in session.hops}


def test_cheaters_get_caught_and_forfeit(runs: dict[str, Simulation]) -> None:
    sim = runs["cheaters"]
    assert sim.c.true_convictions >= 1
    assert sim.c.false_convictions == 0
    accounts = compute_balances(sim.ledger.receipts, sim.ledger.proofs)
    for peer in sim.peers:
        if peer.convicted_at is not None and peer.key in accounts:
            assert accounts[peer.key].earned == 0
    honest = [p for p in sim.peers if p.role is Role.HONEST]
    assert all(p.convicted_at is None for p in honest)


def test_same_seed_same_run() -> None:
    a = Simulation(config_for("churn", 120, 0.5, seed=11))
    b = Simulation(config_for("churn", 120, 0.5, seed=11))
    a.run()
    b.run()
    assert a.metrics.sessions == b.metrics.sessions
    assert a.metrics.samples == b.metrics.samples
    assert a.metrics.counters == b.metrics.counters
