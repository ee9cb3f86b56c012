"""Calibration data for the verification tolerances (docs/verification.md).

Runs `plexus.verification.calibration` (honest servers: fp32/bf16 audited by fp32/bf16,
batch sizes 1-8, two spans per model, the four test model families) and prints the worst
honest errors against the tolerances, then the same audits against the `noise`, `skip`-like
and `random` faults.

    python benchmarks/verification_calibration.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from plexus.verification import calibration
from plexus.verification.compare import FULL_TOLERANCE, HONEST_RHO
from plexus.verification.faults import Fault


def main() -> None:
    torch.set_num_threads(1)
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.model_fixtures import write_model_dirs

    folders = {k: str(v) for k, v in write_model_dirs(Path(tempfile.mkdtemp())).items()}
    stats = calibration.run(folders)
    print(f"honest audits: {stats.audits}; flagged by the client: {stats.full_flags}; "
          f"by the proof checker: {stats.sketch_flags}")  # fmt: skip
    print(f"worst full-tensor error {stats.max_full:.4f} (tolerance {FULL_TOLERANCE}); "
          f"worst sketch distance / threshold {stats.max_sketch_ratio:.3f} "
          f"(HONEST_RHO {HONEST_RHO})")  # fmt: skip
    worst: dict[str, float] = {}
    for case, err in stats.by_case.items():
        name, span, pair, _ = case.split(" ")
        key = f"{name} {span} {pair}"
        worst[key] = max(worst.get(key, 0.0), err)
    print("| model | blocks | served -> audited by | worst step error (batch 1-8) |")
    print("|---|---|---|---|")
    for key, err in sorted(worst.items()):
        name, span, pair = key.split(" ")
        print(f"| {name} | {span} | {pair} | {err:.4f} |")
    for fault in (Fault("noise"), Fault("random")):
        bad = calibration.run({"tiny": folders["tiny"], "llama": folders["llama"]}, fault=fault)
        print(f"fault {fault}: {bad.audits} audits; client flags {bad.full_flags}; "
              f"checker flags {bad.sketch_flags}")  # fmt: skip


if __name__ == "__main__":
    main()
