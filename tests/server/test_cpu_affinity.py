"""`plexus serve --cpus`: parsing core lists, pinning, and the errors users see."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from plexus.cpu_affinity import parse_cpu_list, pin_to
from plexus.errors import ConfigError


def test_cpu_lists_use_the_linux_notation() -> None:
    assert parse_cpu_list("1") == {1}
    assert parse_cpu_list("0-3,6") == {0, 1, 2, 3, 6}
    assert parse_cpu_list(" 2 , 0-1 ") == {0, 1, 2}


@pytest.mark.parametrize("text", ["", "a", "3-1", "-1", "1-", "0,,1", "99999"])
def test_bad_cpu_lists_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--cpus"):
        parse_cpu_list(text)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pinning_a_process_and_refusing_cores_it_cannot_use() -> None:
    available = sorted(os.sched_getaffinity(0))
    code = (
        "import os; from plexus.cpu_affinity import pin_to; "
        f"pin_to({{{available[0]}}}); print(sorted(os.sched_getaffinity(0)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([available[0]])
    with pytest.raises(ConfigError, match="not available"):
        pin_to({max(available) + 1})


def test_serve_reports_a_bad_cpu_list_before_loading_anything(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "plexus", "serve", "--model", "plexus-tiny", "--cpus", "x",
         "--data-dir", str(tmp_path), "--initial-peers", "/ip4/127.0.0.1/tcp/1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "--cpus" in out.stderr and "Traceback" not in out.stderr
