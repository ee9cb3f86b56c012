"""The client's check of each step reply against its server's signed commitment, with and
without the hashes computed ahead while it waits (`Auditor.precheck`). Real commitments
from a block server's handlers, in process (the network is not the subject here)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import trio

from plexus.client.audit import Auditor
from plexus.client.inference import HopState
from plexus.client.planner import Hop, ServerInfo
from plexus.errors import NetworkError
from plexus.identity import Identity
from plexus.models import load_span
from plexus.p2p.dataplane import Message
from plexus.server.backend import SpanBackend
from plexus.server.errors import ServerError
from plexus.server.handlers import BlockServerHandlers
from plexus.server.verifier import ServerVerifier

MODEL = "m"


def run_steps(model_dirs: dict[str, Path], check: Any) -> None:
    """Open a session on a verifying server (blocks 0-3 of the tiny model) and call
    `check(ctx)`: `ctx.step(hidden)` runs a step and returns (mask, reply); `ctx.state`
    and `ctx.auditor` are the client's; `ctx.verifier`, `ctx.session` the server's."""
    span = load_span(model_dirs["tiny"], 0, 3, progress=False)
    server = Identity.generate(os.urandom(32))
    client = Identity.generate(os.urandom(32))
    verifier = ServerVerifier(server, MODEL, params_per_block=1000)
    handlers = BlockServerHandlers(SpanBackend(span), MODEL, {}, verifier)
    swarm = SimpleNamespace(model_id=MODEL, reputation={})
    auditor = Auditor(client, swarm)  # type: ignore[arg-type]
    info = ServerInfo(server.peer_id_str, 0, 3, throughput=1.0)
    state = HopState(Hop(info, 0, 3))
    me = client.peer_id_str

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handlers.backend.run)
            opened = await handlers.on_open(
                me, Message("open", {"model_id": MODEL, "start": 0, "end": 3, "max_length": 64})
            )
            state.session_id = opened.fields["session_id"]

            async def step(hidden: torch.Tensor, **extra: Any) -> tuple[torch.Tensor, Message]:
                fields = {"session_id": state.session_id, "length": state.length, **extra}
                reply = await handlers.on_step(me, Message("step", fields, [hidden]))
                return torch.ones(hidden.shape[:2], dtype=torch.long), reply

            session = handlers.backend.sessions[state.session_id]

            async def commitment(length: int) -> Message:
                fields = {"session_id": state.session_id, "length": length, "wait_ms": 1000}
                return await handlers.on_commitment(me, Message("commitment", fields))

            ctx = SimpleNamespace(
                state=state,
                auditor=auditor,
                step=step,
                commitment=commitment,
                verifier=verifier,
                session=session,
            )
            await check(ctx)
            nursery.cancel_scope.cancel()

    trio.run(main)


def accepted(state: HopState, hidden: torch.Tensor, mask: torch.Tensor) -> None:
    state.length += hidden.shape[1]
    state.inputs.append(hidden)
    state.masks.append(mask)


def test_prechecked_and_plain_checks_accept_honest_steps(model_dirs: dict[str, Path]) -> None:
    async def check(ctx: Any) -> None:
        state, auditor, step = ctx.state, ctx.auditor, ctx.step
        for i, tokens in enumerate((3, 1, 1, 1)):
            hidden = torch.randn(1, tokens, 128)
            mask, reply = await step(hidden)
            out = reply.tensors[0]
            if i % 2:  # ahead, as while the server computes
                ahead = auditor.precheck(state, hidden, mask)
                assert auditor.precheck(state, hidden, mask) is ahead  # reused
            auditor.check_step(state, hidden, mask, reply, out)
            assert state.audit.prechecked is None
            accepted(state, hidden, mask)
        assert [r.position for r in state.audit.records] == [0, 3, 4, 5]

    run_steps(model_dirs, check)


def test_a_precheck_of_other_tensors_is_not_used(model_dirs: dict[str, Path]) -> None:
    """An inputs hash computed ahead for other inputs is computed again for the inputs
    actually checked; with a reused one, an altered output is still caught."""

    async def check(ctx: Any) -> None:
        state, auditor, step = ctx.state, ctx.auditor, ctx.step
        hidden = torch.randn(1, 3, 128)
        mask, reply = await step(hidden)
        out = reply.tensors[0]
        auditor.precheck(state, torch.randn(1, 3, 128), mask)  # other inputs
        auditor.check_step(state, hidden, mask, reply, out)
        accepted(state, hidden, mask)

        hidden = torch.randn(1, 1, 128)
        mask, reply = await step(hidden)
        out = reply.tensors[0]
        auditor.precheck(state, hidden, mask)
        altered = out.clone()
        altered[0, 0, 0] += 1.0
        with pytest.raises(NetworkError, match="committed to something else"):
            auditor.check_step(state, hidden, mask, reply, altered)
        auditor.check_step(state, hidden, mask, reply, out)  # the real one still passes
        accepted(state, hidden, mask)

    run_steps(model_dirs, check)


def test_wrong_inputs_or_non_finite_outputs_are_refused(model_dirs: dict[str, Path]) -> None:
    async def check(ctx: Any) -> None:
        hidden = torch.randn(1, 2, 128)
        mask, reply = await ctx.step(hidden)
        out = reply.tensors[0]
        ctx.auditor.precheck(ctx.state, hidden, mask)
        with pytest.raises(NetworkError, match="other inputs"):
            ctx.auditor.check_step(ctx.state, hidden + 1.0, mask, reply, out)
        # A server that commits to NaNs: the commitment matches what it sent, and is refused.
        nan = torch.full_like(out, float("nan"))
        fields = ctx.verifier.commit_step(ctx.session, 0, hidden, None, nan)
        with pytest.raises(NetworkError, match="non-finite"):
            ctx.auditor.check_step(ctx.state, hidden, mask, Message("step", fields, [nan]), nan)
        assert ctx.state.audit.records == []

    run_steps(model_dirs, check)


def test_a_split_steps_commitment_comes_with_the_next_step(model_dirs: dict[str, Path]) -> None:
    """`split` steps answer without their commitment; the next step asking `previous`
    brings it (as would a `commitment` request), and the client checks it then."""

    async def check(ctx: Any) -> None:
        state, auditor, step = ctx.state, ctx.auditor, ctx.step
        with pytest.raises(ServerError, match="no split step ended at length 0"):
            await step(torch.randn(1, 3, 128), previous=True)  # nothing to bring
        pending = None
        for tokens in (3, 1, 1):
            hidden = torch.randn(1, tokens, 128)
            extra = {"split": True} | ({"previous": True} if pending else {})
            mask, reply = await step(hidden, **extra)
            assert reply.fields["commitment_follows"] is True
            assert "commitment" not in reply.fields
            if pending is None:
                assert "previous" not in reply.fields
            else:
                auditor.check_commitment(state, pending, reply.fields["previous"])
            out = reply.tensors[0]
            pending = auditor.take_output(state, hidden, mask, out, out.float())
            accepted(state, hidden, mask)
        fetched = await ctx.commitment(state.length)  # the last one, asked for
        auditor.check_commitment(state, pending, fetched.fields)
        assert [r.position for r in state.audit.records] == [0, 3, 4]
        assert len(state.audit.outputs) == 3
        # A plain step leaves nothing for the next one to bring.
        mask, reply = await step(torch.randn(1, 1, 128))
        accepted(state, torch.randn(1, 1, 128), mask)
        with pytest.raises(ServerError, match="no split step ended"):
            await step(torch.randn(1, 1, 128), previous=True)

    run_steps(model_dirs, check)


def test_a_commitment_for_another_step_is_refused(model_dirs: dict[str, Path]) -> None:
    """A `previous` that is not the taken step's commitment (an older step's, or one
    with an altered sketch) fails the hop, and keeps no record."""

    async def check(ctx: Any) -> None:
        state, auditor, step = ctx.state, ctx.auditor, ctx.step
        hidden = torch.randn(1, 2, 128)
        mask, reply = await step(hidden, split=True)
        first = (await ctx.commitment(2)).fields
        pending = auditor.take_output(state, hidden, mask, reply.tensors[0], reply.tensors[0])
        accepted(state, hidden, mask)
        hidden = torch.randn(1, 1, 128)
        mask, reply = await step(hidden, split=True, previous=True)
        assert reply.fields["previous"] == first
        auditor.check_commitment(state, pending, first)
        second = auditor.take_output(state, hidden, mask, reply.tensors[0], reply.tensors[0])
        with pytest.raises(NetworkError, match="other inputs"):
            auditor.check_commitment(state, second, first)  # the step before's
        fields = dict((await ctx.commitment(3)).fields)
        blob = bytearray(bytes.fromhex(fields["commitment"]))
        blob[-1] ^= 1
        fields["commitment"] = blob.hex()
        with pytest.raises(NetworkError, match="signature"):
            auditor.check_commitment(state, second, fields)
        assert len(state.audit.records) == 1

    run_steps(model_dirs, check)


def test_an_uncommitted_last_output_is_compared_with_the_replay(
    model_dirs: dict[str, Path],
) -> None:
    """A server that fails before its last commitment came leaves that step unproven; its
    output is compared with the replacement's replay, and a wrong one counts against it."""

    async def check(ctx: Any) -> None:
        state, auditor, step = ctx.state, ctx.auditor, ctx.step
        hidden = torch.randn(1, 3, 128)
        mask, reply = await step(hidden, split=True)
        out = reply.tensors[0]
        pending = auditor.take_output(state, hidden, mask, out, out.float())
        accepted(state, hidden, mask)
        peer = state.hop.peer_id
        replay = out.clone()  # an honest replacement: the same values
        auditor.compare_lost(state, pending, hidden, mask, replay)
        assert peer not in auditor.caught_at
        assert (auditor.stats.unproven, auditor.stats.unproven_wrong) == (1, 0)
        replay[0, 1] += 0.5 * (out[0, 1] - hidden[0, 1])  # off by half the update
        auditor.compare_lost(state, pending, hidden, mask, replay)
        assert peer in auditor.caught_at and auditor.recently_caught(peer)
        assert (auditor.stats.unproven, auditor.stats.unproven_wrong) == (2, 1)

    run_steps(model_dirs, check)
