"""Loading a span of a >= 1 GB checkpoint costs the span's bytes, not the checkpoint's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "span_memory.py"
ALLOWANCE_MB = 400


def run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_peak_rss_follows_the_span(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    run("--dir", str(folder), "--write-only")
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert size >= 2**30
    for start, end in [(2, 2), (1, 3)]:
        # A fresh process per load, so its peak RSS is this load's alone.
        result = json.loads(
            run("--dir", str(folder), "--start", str(start), "--end", str(end), "--json").stdout
        )
        assert result["span_weights_mb"] > 100
        assert result["peak_rss_mb"] <= result["span_weights_mb"] + ALLOWANCE_MB, result
