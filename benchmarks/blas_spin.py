"""Does committing to a long chunk slow the span's next decode steps? (It did: stop 22.)

    python benchmarks/blas_spin.py [--tokens 512] [--repeats 12] [--threads 2]

A server commits to every step it computes; the sketch projects the chunk's update onto
3 vectors (`plexus.verification.commitments`). Through numpy's `@` that product went to
numpy's OpenBLAS, which splits a long chunk across its own threads; those then spin for
about 0.13 s, taking a core from the torch threads of the steps that follow. For each way
of projecting (`@` as before, `make_commitment` as now, nothing) this prefills a 4-block
span with `--tokens` tokens, projects or commits, then runs one-token decode steps
(2 ms apart, as a server waits between steps) for 0.4 s, and prints the median step in
the first 0.12 s and in the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as plexus serve sets it

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from distributed_throughput import model_folder

from plexus.models.loading import load_span
from plexus.models.session import SpanSession
from plexus.verification.commitments import PROJECTIONS, Kind, make_commitment

AFTER_S = 0.12  # "right after": OpenBLAS' threads spin about this long
WINDOW_S = 0.4


def _with_matmul(x: torch.Tensor, out: torch.Tensor) -> None:
    proj = np.random.default_rng(0).standard_normal((PROJECTIONS, x.shape[2]), np.float32)
    (out - x).numpy() @ proj.T  # what the sketch did before stop 22


def _with_commitment(x: torch.Tensor, out: torch.Tensor) -> None:
    make_commitment(
        kind=Kind.STEP, model_id="bench", block_start=0, block_end=3, session_id=bytes(16),
        step=1, inputs_digest=bytes(32), hidden=x, output=out, mask=None, position=0,
    )  # fmt: skip


def measure(
    session_of: Callable[[], SpanSession], work: Callable[..., None], tokens: int, repeats: int
) -> tuple[float, float]:
    after, later = [], []
    hidden = session_of().span.config.hidden_size
    for _ in range(repeats):
        session = session_of()
        x = torch.randn(1, tokens, hidden)
        work(x, session.step(x, None))
        done = time.perf_counter()
        while (started := time.perf_counter()) - done < WINDOW_S:
            session.step(torch.randn(1, 1, hidden), None)
            (after if started - done < AFTER_S else later).append(time.perf_counter() - started)
            time.sleep(0.002)
    return statistics.median(after) * 1e3, statistics.median(later) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512, help="prefill length")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "plexus-bench")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    span = load_span(model_folder(args.dir, "30M"), 0, 3, dtype="fp32", progress=False)
    works: dict[str, Callable[..., None]] = {
        "numpy @ (before)": _with_matmul,
        "make_commitment (now)": _with_commitment,
        "nothing": lambda x, out: None,
    }
    with torch.inference_mode():
        for name, work in works.items():
            after, later = measure(lambda: SpanSession(span), work, args.tokens, args.repeats)
            if args.json:
                row = {"after": name, "first_ms": after, "later_ms": later, "tokens": args.tokens}
                print(json.dumps(row), flush=True)
            else:
                print(
                    f"after {name:22s}: decode step {after:6.2f} ms in the first "
                    f"{AFTER_S:.2f} s, {later:6.2f} ms later ({args.tokens}-token prefill, "
                    f"{args.threads} torch threads)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
