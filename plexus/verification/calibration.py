"""Honest-variation calibration: how far two honest servers' results drift apart.

For every (model, span, dtype of the audited server, dtype of the auditor, batch size) the
audited server runs a session (one prefill chunk, then one token per step, batch rows of
different lengths left-padded) and the auditor re-runs the whole input as one stateless
forward, with the same batch and (for batches > 1) also row by row, as batch size 1.
Each step is one audit: its full-tensor error (what the client checks) and the sketch
distance between the two signed commitments (what a fraud proof's checker sees)
are compared with the tolerances in `plexus.verification.compare`.

`benchmarks/verification_calibration.py` prints the table for docs/verification.md and
tests/verification/test_calibration.py asserts zero false convictions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from plexus.models import load_head, load_span, open_model
from plexus.models.session import SpanSession, stateless_forward
from plexus.verification.commitments import (
    Commitment,
    InputsHasher,
    Kind,
    inputs_hash,
    make_commitment,
)
from plexus.verification.compare import FULL_TOLERANCE, sketch_distance, step_errors
from plexus.verification.faults import Fault

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Stats:
    audits: int = 0
    full_flags: int = 0  # client-side disagreements
    sketch_flags: int = 0  # checker-side disagreements
    max_full: float = 0.0
    max_sketch_ratio: float = 0.0  # distance / threshold, worst case
    by_case: dict[str, float] = field(default_factory=dict)  # case -> worst full error

    def add(self, case: str, full: float, ratio: float) -> None:
        self.audits += 1
        self.full_flags += full > FULL_TOLERANCE
        self.sketch_flags += ratio > 1.0
        self.max_full = max(self.max_full, full)
        self.max_sketch_ratio = max(self.max_sketch_ratio, ratio)
        self.by_case[case] = max(self.by_case.get(case, 0.0), full)


def _prompts(batch: int, length: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    ids = torch.randint(3, max(4, vocab - 1), (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):  # left padding of various lengths
        pad = int(torch.randint(0, length // 2, (1,), generator=gen))
        mask[row, :pad] = 0
    return ids, mask


def run(
    folders: dict[str, str],
    *,
    batches: Iterable[int] = range(1, 9),
    prefill: int = 6,
    decode: int = 8,
    fault: Fault | None = None,
    seed: int = 0,
) -> Stats:
    """Audit honest (or, with `fault`, faulty) servers; returns the statistics."""
    stats = Stats()
    gen = torch.Generator().manual_seed(seed)
    for name, folder in folders.items():
        files = open_model(folder)
        n = files.config.num_hidden_layers
        head = load_head(files, progress=False)
        for start, end in ((0, n - 1), (n // 2, n - 1)):
            spans = {d: load_span(files, start, end, dtype=t) for d, t in DTYPES.items()}
            pre = load_span(files, 0, start - 1, dtype=torch.float32) if start else None
            for batch in batches:
                ids, mask = _prompts(batch, prefill + decode, files.config.vocab_size, gen)
                x = head.embed(ids).float()
                if pre is not None:
                    x = stateless_forward(pre, x, mask).float()
                refs = {d: _reference(spans[d], x, mask) for d in DTYPES}
                if batch > 1:  # the auditor runs each row alone: another batch shape
                    for d in DTYPES:
                        refs[f"{d}(rows)"] = torch.cat(
                            [_reference(spans[d], x[r : r + 1], mask[r : r + 1])
                             for r in range(batch)]
                        )  # fmt: skip
                for served in DTYPES:
                    steps = _serve(spans[served], x, mask, prefill, start, end, fault)
                    for audited_by, ref in refs.items():
                        case = f"{name} {start}-{end} {served}->{audited_by} b{batch}"
                        _audit(stats, case, steps, ref, x, mask, start, end)
    return stats


Step = tuple[int, int, torch.Tensor, Commitment]


def _reference(auditor: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    dtype = next(auditor.parameters()).dtype
    return stateless_forward(auditor, x.to(dtype), mask).float()


def _serve(
    served: torch.nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor,
    prefill: int,
    start: int,
    end: int,
    fault: Fault | None,
) -> list[Step]:
    """The audited server: a prefill chunk, then one token per step, each committed."""
    dtype = next(served.parameters()).dtype
    session = SpanSession(served)
    hasher = InputsHasher(x.shape[0], x.shape[2])
    chunks = [(0, prefill)] + [(p, p + 1) for p in range(prefill, x.shape[1])]
    steps: list[Step] = []
    for a, b in chunks:
        out = session.step(x[:, a:b].to(dtype), mask[:, a:b])
        if fault is not None:
            out = fault.corrupt(x[:, a:b], out)
        digest = hasher.update(x[:, a:b], mask[:, a:b])
        c = make_commitment(
            kind=Kind.STEP, model_id="m", block_start=start, block_end=end,
            session_id=bytes(16), step=len(steps) + 1, inputs_digest=digest,
            hidden=x[:, a:b], output=out, mask=mask[:, a:b], position=a,
        )  # fmt: skip
        steps.append((a, b, out.float(), Commitment.decode(c.encode())))
    return steps


def _audit(
    stats: Stats,
    case: str,
    steps: list[Step],
    ref: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor,
    start: int,
    end: int,
) -> None:
    for a, b, out, step_commitment in steps:
        # The auditor commits to the prefix up to this step (what a fraud proof holds).
        digest = inputs_hash(x[:, :b], mask[:, :b])
        witness = make_commitment(
            kind=Kind.FORWARD, model_id="m", block_start=start, block_end=end,
            session_id=bytes(16), step=0, inputs_digest=digest, hidden=x[:, :b],
            output=ref[:, :b], mask=mask[:, :b], position=0, sketch_from=a,
        )  # fmt: skip
        full = step_errors(out - x[:, a:b], ref[:, a:b] - x[:, a:b], mask[:, a:b])
        d = sketch_distance(step_commitment, Commitment.decode(witness.encode()))
        stats.add(case, full, d.distance / d.threshold if d.tokens else 0.0)
