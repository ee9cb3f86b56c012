"""The discrete-event simulation of one scenario: churn, sessions, failovers, audits, ledger."""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import defaultdict
from typing import Any

from plexus.client.planner import MissingBlocksError
from simulations.accounting import SimLedger
from simulations.config import Config
from simulations.coverage import SwarmCoverage
from simulations.devices import span_length
from simulations.events import EventQueue
from simulations.metrics import BalanceRow, CheaterRow, Metrics, SampleRow, SessionRow
from simulations.network import draw_region, lookup_latency, region_rtt
from simulations.peers import Peer, Role
from simulations.population import build
from simulations.routing import Router
from simulations.sessions import ActiveHop, Session, hop_prefill_s, hop_step_s
from simulations.verification import Auditor

NAN = float("nan")


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


class Simulation:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rngs = {
            name: random.Random(f"{cfg.seed}/{name}")
            for name in ("population", "churn", "span", "clients", "audit", "network")
        }
        self.q = EventQueue()
        self.peers: list[Peer] = build(cfg, self.rngs["population"])
        self.by_name = {p.name: p for p in self.peers}
        self.coverage = SwarmCoverage(cfg.num_blocks)
        self.ledger = SimLedger(cfg.model_id, cfg.scale_milli)
        self.router = Router(cfg.num_blocks, cfg.max_length, cfg.view_refresh_s, self._weight)
        self.auditor = Auditor(
            self.rngs["audit"],
            floor=cfg.audit_floor,
            sample_steps=cfg.audit_sample_steps,
            honest_mismatch=cfg.honest_mismatch,
            checker_false_accept=cfg.checker_false_accept,
        )
        self.metrics = Metrics()
        self.c = self.metrics.counters
        self.sessions: dict[int, Session] = {}
        self.convicted_names: set[str] = set()
        self.online: list[Peer] = []  # serving peers, for sampling auditors
        self._online_pos: dict[int, int] = {}
        self.consumers = [
            hashlib.sha256(f"consumer{i}".encode()).digest() for i in range(max(1, cfg.peers // 2))
        ]
        self._next_session = 0
        self.wall_s = 0.0

    # -- reputation as the planner sees it ------------------------------------------------
    def _weight(self, peer: Peer) -> float:
        if peer.key in self.ledger.convicted:
            return 0.0
        rep = self.ledger.reputation(peer.key)
        if rep.banned:
            return 0.0
        w = self.cfg.newcomer_weight
        return w + (1.0 - w) * rep.score

    # -- churn ---------------------------------------------------------------------------
    def _schedule_initial(self) -> None:
        cfg, rng = self.cfg, self.rngs["churn"]
        on, off = cfg.median_online_h, cfg.median_offline_h
        for peer in self.peers:
            if peer.role is Role.SYBIL:
                self.q.at(cfg.sybil.at_hours * 3600.0, lambda p=peer: self._join(p))
            elif peer.role in (Role.COLLUDER, Role.ACCOMPLICE) or rng.random() < on / (on + off):
                self.q.at(rng.uniform(0.0, cfg.warmup_hours * 3600.0), lambda p=peer: self._join(p))
            else:
                delay = rng.uniform(0.0, 1.0) * _lognormal(rng, off * 3600.0, cfg.churn_sigma)
                self.q.at(delay, lambda p=peer: self._join(p))

    def _join(self, peer: Peer) -> None:
        if peer.convicted_at is not None or peer.online:
            return
        cfg, rng = self.cfg, self.rngs["span"]
        length = span_length(peer.device, cfg.block_gb, cfg.num_blocks)
        partner = self.peers[peer.partner] if peer.partner is not None else None
        if peer.role is Role.ACCOMPLICE and partner is not None and partner.span is not None:
            span = partner.span  # sits next to its partner, to be picked as its auditor
        else:
            span = self.coverage.choose(length, rng)
        peer.epoch += 1
        load_s = self.rngs["churn"].uniform(*cfg.load_span_s)
        self.q.after(load_s, lambda e=peer.epoch: self._serve(peer, span, e))

    def _serve(self, peer: Peer, span: tuple[int, int], epoch: int) -> None:
        if peer.epoch != epoch or peer.convicted_at is not None:
            return
        cfg, rng = self.cfg, self.rngs["churn"]
        peer.online, peer.span = True, span
        peer.joined_at = self.q.now if peer.joined_at is None else peer.joined_at
        self.coverage.add(span, peer.announced_throughput)
        self._online_pos[peer.index] = len(self.online)
        self.online.append(peer)
        self.c.joins += 1
        if peer.role is Role.SYBIL:
            stay = cfg.sybil.leave_after_hours * 3600.0
        elif peer.role in (Role.COLLUDER, Role.ACCOMPLICE):
            stay = cfg.horizon_s * 2
        else:
            stay = _lognormal(rng, cfg.median_online_h * 3600.0, cfg.churn_sigma)
        self.q.after(stay, lambda e=epoch: self._leave(peer, e, rejoin=True))
        period = cfg.rebalance_period_s * rng.uniform(0.8, 1.2)
        self.q.after(period, lambda e=epoch: self._rebalance(peer, e))

    def _stop_serving(self, peer: Peer) -> None:
        peer.online = False
        assert peer.span is not None
        self.coverage.remove(peer.span, peer.announced_throughput)
        pos = self._online_pos.pop(peer.index)
        last = self.online.pop()
        if last is not peer:
            self.online[pos] = last
            self._online_pos[last.index] = pos
        peer.epoch += 1

    def _leave(self, peer: Peer, epoch: int, rejoin: bool) -> None:
        if peer.epoch != epoch or not peer.online:
            return
        self._stop_serving(peer)
        self.c.leaves += 1
        for sid in sorted(peer.sessions):
            self._failover(self.sessions[sid], peer)
        peer.sessions.clear()
        if rejoin and peer.role is not Role.SYBIL and peer.convicted_at is None:
            off = _lognormal(self.rngs["churn"], self.cfg.median_offline_h * 3600.0, 1.0)
            self.q.after(off, lambda: self._join(peer))

    def _rebalance(self, peer: Peer, epoch: int) -> None:
        if peer.epoch != epoch or not peer.online or peer.span is None:
            return
        rng = self.rngs["span"]
        target = None
        if not peer.sessions and peer.role is not Role.ACCOMPLICE:
            target = self.coverage.better_span(peer.span, peer.announced_throughput, rng)
        if target is None:
            period = self.cfg.rebalance_period_s * rng.uniform(0.8, 1.2)
            self.q.after(period, lambda: self._rebalance(peer, epoch))
            return
        self.c.moves += 1
        self._stop_serving(peer)
        load_s = self.rngs["churn"].uniform(*self.cfg.load_span_s)
        self.q.after(load_s, lambda e=peer.epoch: self._serve(peer, target, e))

    # -- sessions --------------------------------------------------------------------------
    def _schedule_clients(self) -> None:
        cfg = self.cfg
        rate = cfg.sessions_per_peer_hour * cfg.peers / 3600.0
        rng = self.rngs["clients"]
        t = cfg.warmup_hours * 3600.0
        while True:
            t += rng.expovariate(rate)
            if t >= cfg.horizon_s:
                break
            self.q.at(t, self._arrive)

    def _arrive(self) -> None:
        cfg, rng, now = self.cfg, self.rngs["clients"], self.q.now
        sid = self._next_session
        self._next_session += 1
        if rng.random() < cfg.consumer_share or not self.online:
            client = rng.choice(self.consumers)
        else:
            client = rng.choice(self.online).key
        prompt = max(
            1, min(cfg.max_length // 2, round(_lognormal(rng, cfg.median_prompt_tokens, 0.8)))
        )
        wanted = round(_lognormal(rng, cfg.median_generated_tokens, 0.8))
        generate = max(1, min(cfg.max_length - prompt, wanted))
        s = Session(sid, client, draw_region(rng), prompt, generate, now)
        stale = 1.0 - math.exp(-cfg.view_refresh_s * 5 / (cfg.median_online_h * 3600.0))
        s.dht_hops, s.dht_s = lookup_latency(
            len(self.online), s.region, stale, self.rngs["network"]
        )
        opened = self._open(s, 0, cfg.num_blocks - 1)
        if opened is None:
            self._record(s, "no_route", NAN, NAN)
            return
        hops, open_s = opened
        s.hops = hops
        self.sessions[sid] = s
        prefill = sum(hop_prefill_s(h, s.region, prompt) for h in hops)
        s.step_s = sum(hop_step_s(h, s.region) for h in hops)
        s.first_token_at = now + s.dht_s + open_s + prefill + s.step_s
        s.resumed_at, s.generated_before = s.first_token_at, 1
        self._schedule_end(s, s.first_token_at + (generate - 1) * s.step_s)

    def _schedule_end(self, s: Session, when: float) -> None:
        s.version += 1
        self.q.at(when, lambda v=s.version: self._end(s, v))

    def _open(self, s: Session, start: int, end: int) -> tuple[list[ActiveHop], float] | None:
        """Plan and open a chain for blocks start..end as `InferenceSession._open_route` does:
        servers that fail to open are backed off from and the chain is planned again."""
        elapsed = 0.0
        for _ in range(self.cfg.max_open_attempts):
            view = self.router.current(self.q.now, self.peers)
            try:
                banned = s.excluded | self.convicted_names
                route = self.router.plan(view, s.region, start, end, banned)
            except MissingBlocksError:
                return None
            failed = False
            slowest = 0.0
            for hop in route.hops:
                peer = self.by_name[hop.peer_id]
                rtt = region_rtt(s.region, peer.region) + peer.last_mile_s
                if not peer.online or peer.full or not self._holds(peer, hop.start, hop.end):
                    s.excluded.add(peer.name)
                    s.open_retries += 1
                    self.c.open_retries += 1
                    elapsed += self.cfg.dead_server_timeout_s if not peer.online else rtt
                    failed = True
                slowest = max(slowest, rtt)
            if failed:
                continue
            hops = [
                ActiveHop(self.by_name[h.peer_id], h.start, h.end, self.q.now, 0)
                for h in route.hops
            ]
            self._check_route(hops, start, end)
            for h in hops:
                h.peer.sessions.add(s.id)
                h.peer.streams += 1
                s.via_slow |= h.peer.role is Role.SLOW
                if h.peer.rate_at(self.q.now) > 0.0:
                    s.via_cheater = True
                    h.peer.cheat_streams += 1
                    if h.peer.first_cheat_stream_at is None:
                        h.peer.first_cheat_stream_at = self.q.now
            return hops, elapsed + slowest
        return None

    @staticmethod
    def _holds(peer: Peer, start: int, end: int) -> bool:
        return peer.span is not None and peer.span[0] <= start and end <= peer.span[1]

    def _check_route(self, hops: list[ActiveHop], start: int, end: int) -> None:
        """Invariants: the chain covers start..end exactly, on live holders, none convicted."""
        at = start
        for h in hops:
            peer = h.peer
            if h.start != at or not peer.online or not self._holds(peer, h.start, h.end):
                self.c.route_violations += 1
            if peer.key in self.ledger.convicted or peer.convicted_at is not None:
                self.c.convicted_routed += 1
            at = h.end + 1
        if at != end + 1:
            self.c.route_violations += 1

    def _failover(self, s: Session, failed: Peer) -> None:
        """A server on the route left or was convicted: re-plan its blocks elsewhere and
        replay the session's history there, as `InferenceSession._recover` does."""
        now = self.q.now
        index = next(i for i, h in enumerate(s.hops) if h.peer is failed)
        hop = s.hops[index]
        generated = s.generated_by(now)
        self._close_stream(s, hop, generated)
        s.failovers += 1
        self.c.failovers += 1
        s.excluded.add(failed.name)
        opened = self._open(s, hop.start, hop.end)
        if opened is None:
            s.hops.pop(index)
            for other in s.hops:
                self._close_stream(s, other, generated)
                other.peer.sessions.discard(s.id)
            s.hops = []
            self.sessions.pop(s.id, None)
            s.version += 1
            self._record(s, "aborted", NAN, NAN, generated)
            return
        new_hops, open_s = opened
        for h in new_hops:
            h.generated_at_open = generated
        s.hops[index : index + 1] = new_hops
        replay = sum(hop_prefill_s(h, s.region, s.prompt + generated) for h in new_hops)
        stall = s.step_s + open_s + replay  # the failed step, re-opening, replaying history
        s.step_s = sum(hop_step_s(h, s.region) for h in s.hops)
        if now < s.first_token_at:
            s.first_token_at += stall
            s.resumed_at, s.generated_before = s.first_token_at, 1
            self._schedule_end(s, s.first_token_at + (s.generate - 1) * s.step_s)
        else:
            s.resumed_at, s.generated_before = now + stall, generated
            self._schedule_end(s, s.resumed_at + (s.generate - generated) * s.step_s)

    def _end(self, s: Session, version: int) -> None:
        if version != s.version or s.id not in self.sessions:
            return
        for h in s.hops:
            self._close_stream(s, h, s.generate)
            h.peer.sessions.discard(s.id)
        del self.sessions[s.id]
        duration = max(1e-9, self.q.now - s.first_token_at)
        rate = s.generate / duration if s.generate > 1 else 1.0 / s.step_s
        self._record(s, "ok", s.first_token_at - s.arrived, rate, s.generate)

    def _record(self, s: Session, outcome: str, ttft: float, rate: float, gen: int = 0) -> None:
        self.metrics.sessions.append(
            SessionRow(
                s.id,
                s.region,
                s.arrived,
                outcome,
                ttft,
                rate,
                gen,
                s.failovers,
                s.open_retries,
                len(s.hops),
                s.dht_hops,
                s.dht_s,
                s.via_slow,
                s.via_cheater,
            )
        )

    # -- work, receipts and audits ----------------------------------------------------------
    def _close_stream(self, s: Session, hop: ActiveHop, generated: int) -> None:
        server, now = hop.peer, self.q.now
        replayed = s.prompt + hop.generated_at_open
        new_tokens = max(0, generated - hop.generated_at_open)
        tokens = replayed + new_tokens
        self.ledger.receipt(
            server=server.key,
            client=s.client,
            session=s.id,
            span=hop.span,
            prompt_tokens=replayed,
            generated_tokens=new_tokens,
            at=now,
        )
        self.c.served_block_tokens += tokens * hop.blocks
        if server.convicted_at is not None:
            return
        rep = self.ledger.reputation(server.key)
        failed = server.last_failed_audit
        caught = failed is not None and now - failed < self.auditor.recently_caught_s
        verdict = self.auditor.check(
            server,
            rep,
            caught,
            tokens,
            hop.blocks,
            lambda avoid: self._pick_holder(hop, avoid),
            now,
        )
        if not verdict.audited:
            self.c.audits_without_auditor += verdict.no_auditor
            return
        assert verdict.auditor is not None
        server.audited += 1
        self.c.audits += 1
        self.c.reexecuted_block_tokens += verdict.reexecuted_block_tokens
        self.ledger.audit(
            server=server.key,
            auditor=verdict.auditor.key,
            session=s.id,
            span=hop.span,
            passed=verdict.passed,
            at=now,
        )
        self.c.false_fails += verdict.false_fail
        if not verdict.passed:
            server.last_failed_audit = now
        if verdict.convict:
            honest = server.rate_at(now) == 0.0
            self._convict(server, verdict.witnesses, s, hop.span, false=honest)

    def _pick_holder(self, hop: ActiveHop, avoid: set[int]) -> Peer | None:
        """A random serving, unconvicted peer holding the hop's blocks (from the view)."""
        view = self.router.current(self.q.now, self.peers)
        names = view.holders(hop.start, hop.end)
        rng = self.rngs["audit"]
        for _ in range(min(16, len(names))):
            peer = self.by_name[names[rng.randrange(len(names))]]
            if peer.index in avoid or not peer.online or peer.convicted_at is not None:
                continue
            if self._holds(peer, hop.start, hop.end):
                return peer
        return None

    def _convict(
        self, server: Peer, witnesses: list[Peer], s: Session, span: tuple[int, int], false: bool
    ) -> None:
        self.ledger.fraud_proof(
            accused=server.key,
            witnesses=[w.key for w in witnesses],
            reporter=s.client,
            span=span,
            at=self.q.now,
        )
        server.convicted_at = self.q.now
        if false:
            self.c.false_convictions += 1
        else:
            self.c.true_convictions += 1
        # Everyone learns of a fraud proof at once: excluded from every plan from now on,
        # without rebuilding the (still stale) view.
        self.convicted_names.add(server.name)
        if server.online:
            self._leave_convicted(server)

    def _leave_convicted(self, server: Peer) -> None:
        self._stop_serving(server)
        for sid in sorted(server.sessions):
            session = self.sessions.get(sid)
            if session is not None and session.hops:
                self.q.after(0.0, lambda x=session: self._failover_if_routed(x, server))
        # sessions stay registered until their failover runs

    def _failover_if_routed(self, s: Session, server: Peer) -> None:
        if s.id in self.sessions and any(h.peer is server for h in s.hops):
            self._failover(s, server)
            server.sessions.discard(s.id)

    def _farm(self) -> None:
        """Accomplices file fake PASS audits of their partners."""
        for peer in self.peers:
            if peer.role is Role.ACCOMPLICE and peer.partner is not None:
                partner = self.peers[peer.partner]
                if partner.online and partner.span is not None and partner.convicted_at is None:
                    self.ledger.audit(
                        server=partner.key,
                        auditor=peer.key,
                        session=-1 - self.c.fake_audits,
                        span=partner.span,
                        passed=True,
                        at=self.q.now,
                    )
                    self.c.fake_audits += 1
        self.q.after(self.cfg.collusion.farm_every_s, self._farm)

    # -- periodic bookkeeping ---------------------------------------------------------------
    def _rebuild_reputation(self) -> None:
        self.ledger.rebuild_reputation()
        self.router.invalidate()
        self.q.after(self.cfg.ledger_period_s, self._rebuild_reputation)

    def _sample(self) -> None:
        c = self.c
        self.metrics.samples.append(
            SampleRow(
                t_h=self.q.now / 3600.0,
                online=len(self.online),
                active_sessions=len(self.sessions),
                uncovered_blocks=self.coverage.uncovered(),
                min_servers_per_block=self.coverage.min_servers(),
                min_block_throughput=self.coverage.min_throughput(),
                convicted=c.true_convictions + c.false_convictions,
                audits=c.audits,
                audit_overhead=c.reexecuted_block_tokens / max(1, c.served_block_tokens),
            )
        )
        self.q.after(self.cfg.sample_every_s, self._sample)

    # -- running -----------------------------------------------------------------------------
    def run(self) -> Metrics:
        started = time.perf_counter()
        self._schedule_initial()
        self._schedule_clients()
        self.q.at(0.0, self._sample)
        self.q.at(self.cfg.ledger_period_s, self._rebuild_reputation)
        if self.cfg.collusion.pairs:
            self.q.at(self.cfg.warmup_hours * 3600.0, self._farm)
        self.q.run_until(self.cfg.horizon_s)
        self._finish()
        self.wall_s = time.perf_counter() - started
        return self.metrics

    def _finish(self) -> None:
        c = self.c
        c.plans_computed, c.plans_cached = self.router.plans_computed, self.router.plans_cached
        for p in self.peers:
            if p.role in (Role.HONEST, Role.SLOW, Role.ACCOMPLICE) or p.joined_at is None:
                continue
            first = p.joined_at / 3600.0
            cheats_from = (p.joined_at + p.cheats_after_s) / 3600.0
            convicted = NAN if p.convicted_at is None else p.convicted_at / 3600.0
            exposed = p.first_cheat_stream_at
            self.metrics.cheaters.append(
                CheaterRow(
                    p.name,
                    p.role.value,
                    p.cheat_rate,
                    first,
                    cheats_from,
                    convicted,
                    NAN
                    if exposed is None or p.convicted_at is None
                    else convicted - exposed / 3600,
                    p.streams,
                    p.cheat_streams,
                    p.audited,
                    p.audited / max(1, p.streams),
                )
            )
        groups = {p.key: self._group(p) for p in self.peers}
        points = max(1, self.cfg.balance_checkpoints)
        for i in range(1, points + 1):
            t = self.cfg.horizon_s * i / points
            accounts = self.ledger.balances(until=t)
            if sum(a.earned for a in accounts.values()) != sum(a.spent for a in accounts.values()):
                c.zero_sum_violations += 1
            totals: dict[str, list[int]] = defaultdict(list)
            for p in self.peers:
                account = accounts.get(p.key)
                totals[groups[p.key]].append(account.balance if account else 0)
            consumer = [accounts[k].balance for k in self.consumers if k in accounts]
            totals["consumer"] = consumer or [0]
            for group, values in sorted(totals.items()):
                self.metrics.balances.append(
                    BalanceRow(
                        t / 3600.0,
                        group,
                        len(values),
                        sum(values) / len(values) / 1000.0,
                        sum(values) / 1000.0,
                    )
                )

    @staticmethod
    def _group(p: Peer) -> str:
        if p.role in (Role.CHEATER, Role.SLEEPER):
            return f"{p.role.value} {p.cheat_rate:g}"
        if p.role is Role.HONEST:
            return "honest, routed to" if p.streams else "honest, never routed to"
        return p.role.value

    def summary(self) -> dict[str, Any]:
        from simulations.summary import summarise

        return summarise(self)
