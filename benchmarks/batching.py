"""Speed-up of batching decode steps of different sessions into one forward.

    python benchmarks/batching.py [--model DIR_OR_plexus-tiny] [--sessions 1 2 4 8] [--json]

For each session count N: N sessions with different prompt lengths each take 32 one-token
steps, first one session at a time, then batched (`plexus.models.batching`). Prints
tokens/s of both and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from plexus.models import SpanSession, load_span, open_model
from plexus.models.batching import batched_decode

STEPS = 32


def run(span, sessions_n: int, batched: bool) -> float:  # type: ignore[no-untyped-def]
    size = span.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    sessions = [SpanSession(span) for _ in range(sessions_n)]
    for i, s in enumerate(sessions):
        s.step(torch.randn(1, 16 + 8 * i, size, generator=gen))
    tokens = [torch.randn(1, 1, size, generator=gen) for _ in range(sessions_n)]
    started = time.perf_counter()
    for _ in range(STEPS):
        if batched and sessions_n > 1:
            batched_decode(sessions, tokens)
        else:
            for s, t in zip(sessions, tokens, strict=True):
                s.step(t)
    return STEPS * sessions_n / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="plexus-tiny")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = open_model(args.model)
    span = load_span(files, 0, files.config.num_hidden_layers - 1, progress=False)
    for n in args.sessions:
        run(span, n, False)  # warm-up
        alone = run(span, n, False)
        together = run(span, n, True)
        row = {
            "model": args.model,
            "sessions": n,
            "one_at_a_time_tok_s": round(alone, 1),
            "batched_tok_s": round(together, 1),
            "speedup": round(together / alone, 2),
            "threads": torch.get_num_threads(),
        }
        print(
            json.dumps(row)
            if args.json
            else f"{n} sessions: one at a time {row['one_at_a_time_tok_s']} tok/s, batched "
            f"{row['batched_tok_s']} tok/s, speed-up x{row['speedup']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
