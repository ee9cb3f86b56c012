"""Extra compute spent on verification, at steady state and while servers are new.

For a span of blocks it measures, on this machine's CPU (torch, one thread):

* generation: a session with a PROMPT-token prefill then DECODE one-token steps, as a
  server runs it, and apart from it the work of the server's commitments (inputs hash,
  sketch, signature) and of the client's checks of them;
* one audit: the whole input re-run as one stateless forward plus its commitment, as an
  auditor runs it (arbitration, needed only on a mismatch, is not counted);

and combines them with the audit-rate policy: at steady state an honest server is
audited with probability `floor` (2%) per request, so the audit overhead is
floor x t_audit / t_generation; the table also gives the share over a server's first
N requests (expected_audits(N) / N). Results go to docs/performance.md ("Verification").

    python benchmarks/audit_overhead.py [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from transformers import LlamaConfig

from ledger.fraud import sign_commitment
from plexus.identity import Identity
from plexus.models.session import SpanSession, stateless_forward
from plexus.models.span import SpanModel
from plexus.verification import NETWORK_ID
from plexus.verification.commitments import (
    Commitment,
    InputsHasher,
    Kind,
    inputs_hash,
    make_commitment,
    tensor_hash,
)
from plexus.verification.policy import DEFAULT_FLOOR, expected_audits

PROMPT, DECODE = 32, 96
CONFIGS = {
    "tiny-like (hidden 128, 8 blocks)": dict(hidden_size=128, intermediate_size=344, layers=8),
    "small (hidden 1024, 4 blocks)": dict(hidden_size=1024, intermediate_size=2816, layers=4),
}


def span_for(hidden_size: int, intermediate_size: int, layers: int) -> SpanModel:
    config = LlamaConfig(
        hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden_size // 64),
        num_key_value_heads=max(1, hidden_size // 128),
        vocab_size=256, max_position_embeddings=4096,
    )  # fmt: skip
    torch.manual_seed(0)
    span = SpanModel(config, 0, layers - 1).eval()
    for p in span.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return span


def generate(span: SpanModel, x: torch.Tensor, key: Identity) -> tuple[float, float]:
    """Seconds of model compute and of commitment work (timed apart, in the same run, so
    that load from other processes affects both alike)."""
    session = SpanSession(span)
    server_hash = InputsHasher(1, x.shape[2])
    client_hash = InputsHasher(1, x.shape[2])
    chunks = [(0, PROMPT)] + [(p, p + 1) for p in range(PROMPT, PROMPT + DECODE)]
    model = commit = 0.0
    for a, b in chunks:
        t0 = time.perf_counter()
        out = session.step(x[:, a:b])
        t1 = time.perf_counter()
        digest = server_hash.update(x[:, a:b], None)
        blob = make_commitment(
            kind=Kind.STEP, model_id="m", block_start=0, block_end=0,
            session_id=bytes(16), step=1, inputs_digest=digest, hidden=x[:, a:b],
            output=out, mask=None, position=a,
        ).encode()  # fmt: skip
        sign_commitment(key.signing_key, NETWORK_ID, digest, blob)
        client_hash.update(x[:, a:b], None)  # the client's side of the check
        Commitment.decode(blob)
        tensor_hash(out)
        t2 = time.perf_counter()
        model += t1 - t0
        commit += t2 - t1
    return model, commit


def audit(span: SpanModel, x: torch.Tensor, key: Identity) -> float:
    mask = torch.ones(x.shape[:2], dtype=torch.long)
    started = time.perf_counter()
    out = stateless_forward(span, x, mask)
    digest = inputs_hash(x, mask)
    blob = make_commitment(
        kind=Kind.FORWARD, model_id="m", block_start=0, block_end=0, session_id=bytes(16),
        step=0, inputs_digest=digest, hidden=x, output=out, mask=mask, position=0,
    ).encode()  # fmt: skip
    sign_commitment(key.signing_key, NETWORK_ID, digest, blob)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    key = Identity.generate(os.urandom(32))
    rows = []
    for name, cfg in CONFIGS.items():
        span = span_for(cfg["hidden_size"], cfg["intermediate_size"], cfg["layers"])
        x = torch.randn(1, PROMPT + DECODE, cfg["hidden_size"])
        generate(span, x, key)  # warm-up
        runs = [generate(span, x, key) for _ in range(args.repeat)]
        plain = statistics.median(model for model, _ in runs)
        committed = plain + statistics.median(commit for _, commit in runs)
        one_audit = statistics.median(audit(span, x, key) for _ in range(args.repeat))
        rows.append(
            {
                "span": name,
                "generation_s": round(plain, 4),
                "commitment_overhead": round(committed / plain - 1, 4),
                "audit_s": round(one_audit, 4),
                "audit_vs_generation": round(one_audit / plain, 4),
                "steady_state_overhead": round(DEFAULT_FLOOR * one_audit / plain, 4),
                "first_1000_requests_overhead": round(
                    expected_audits(1000) / 1000 * one_audit / plain, 4
                ),
                "first_10000_requests_overhead": round(
                    expected_audits(10_000) / 10_000 * one_audit / plain, 4
                ),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"request: {PROMPT}-token prompt + {DECODE} generated tokens; audit floor "
          f"{DEFAULT_FLOOR:.0%}; torch {torch.__version__}, 1 thread")  # fmt: skip
    print(
        "| span | generation | commitments | one audit | audit/generation | audits at "
        "steady state | first 1,000 requests | first 10,000 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['span']} | {r['generation_s'] * 1000:.0f} ms | "
            f"+{r['commitment_overhead']:.1%} | {r['audit_s'] * 1000:.0f} ms | "
            f"{r['audit_vs_generation']:.2f} | {r['steady_state_overhead']:.2%} | "
            f"{r['first_1000_requests_overhead']:.1%} | {r['first_10000_requests_overhead']:.1%} |"
        )


if __name__ == "__main__":
    main()
