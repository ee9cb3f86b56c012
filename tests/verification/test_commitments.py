"""Commitments, sketches and the fraud-proof checker, without processes."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
import torch

from ledger import sign_commitment
from ledger.errors import InvalidFraudProof
from ledger.fraud import verify_fraud_proof
from plexus.identity import Identity
from plexus.verification import NETWORK_ID
from plexus.verification.commitments import (
    HEADER_BYTES,
    Commitment,
    CommitmentError,
    InputsHasher,
    Kind,
    inputs_hash,
    make_commitment,
)
from plexus.verification.proofs import build_fraud_proof, check_fraud_proof

H = 64


def commit(x: torch.Tensor, out: torch.Tensor, position: int = 0, kind: Kind = Kind.FORWARD):
    digest = inputs_hash(x, None)
    c = make_commitment(
        kind=kind, model_id="m", block_start=0, block_end=3, session_id=bytes(16), step=1,
        inputs_digest=digest, hidden=x, output=out, mask=None, position=0,
        sketch_from=position,
    )  # fmt: skip
    return digest, c.encode()


def test_running_hash_equals_whole_sequence_hash() -> None:
    x, mask = torch.randn(3, 10, H), torch.ones(3, 10, dtype=torch.long)
    mask[1, :4] = 0
    running = InputsHasher(3, H)
    for a, b in ((0, 6), (6, 7), (7, 10)):
        digest = running.update(x[:, a:b], mask[:, a:b])
    assert digest == inputs_hash(x, mask)
    assert inputs_hash(x, None) != digest  # the mask is bound too
    assert inputs_hash(x.to(torch.bfloat16), mask) != digest


def test_size_is_8_bytes_per_token() -> None:
    x = torch.randn(1, 32, H)
    _, blob = commit(x, x + torch.randn_like(x))
    assert len(blob) == HEADER_BYTES + 32 * 8 == 89 + 256
    decoded = Commitment.decode(blob)
    assert decoded.tokens == 32 and decoded.encode() == blob
    for bad in (blob[:-1], blob + b"\0", b"XXXX" + blob[4:]):
        with pytest.raises(CommitmentError):
            Commitment.decode(bad)


def proof_for(accused_out: torch.Tensor, witness_outs: list[torch.Tensor], x: torch.Tensor):
    keys = [Identity.generate(os.urandom(32)) for _ in range(len(witness_outs) + 2)]
    signed = []
    for key, out in zip(keys, [accused_out, *witness_outs], strict=False):
        digest, blob = commit(x, out)
        signed.append(sign_commitment(key.signing_key, NETWORK_ID, digest, blob))
    return build_fraud_proof(
        keys[-1].signing_key, network_id=NETWORK_ID, model_id="m", block_start=0, block_end=3,
        inputs_hash=digest, accused=signed[0], witnesses=signed[1:],
    )  # fmt: skip


def test_checker_convicts_only_real_disagreement() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 4, H)
    honest = x + torch.randn_like(x)
    close = honest + 0.01 * torch.randn_like(x)  # honest noise: 1%
    noisy = honest + 0.5 * torch.randn_like(x)  # the noise fault
    assert check_fraud_proof(proof_for(noisy, [honest, close], x).proof)
    verify_fraud_proof(proof_for(noisy, [honest, close], x), NETWORK_ID, check_fraud_proof)
    assert not check_fraud_proof(proof_for(close, [honest, honest], x).proof)  # honest
    assert not check_fraud_proof(proof_for(noisy, [honest], x).proof)  # one witness
    assert not check_fraud_proof(proof_for(honest, [noisy, close], x).proof)  # split
    with pytest.raises(InvalidFraudProof):
        verify_fraud_proof(proof_for(close, [honest, honest], x), NETWORK_ID, check_fraud_proof)


def _other_threads_cpu_s() -> float:
    """CPU seconds used so far by this process' threads other than the calling one."""
    me, ticks = threading.get_native_id(), 0
    for task in os.listdir("/proc/self/task"):
        if int(task) != me:
            with contextlib.suppress(OSError):  # a thread that just ended
                with open(f"/proc/self/task/{task}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads Linux's /proc")
def test_a_long_chunk_leaves_no_thread_spinning() -> None:
    # numpy's `@` would hand a chunk this long to OpenBLAS threads, which then spin for
    # about 0.13 s (taking a core from the span's next steps) on any machine with 2+ cores.
    x = torch.randn(1, 2048, 512)
    commit(x, x + 0.01 * torch.randn_like(x))  # warm-up: imports, allocations
    before = _other_threads_cpu_s()
    for _ in range(3):
        commit(x, x + 0.01 * torch.randn_like(x))
        time.sleep(0.15)
    assert _other_threads_cpu_s() - before < 0.05
