"""`plexus bootstrap` as a process: plain output, SIGINT, a taken port, a stable identity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "PLEXUS_INITIAL_PEERS": ""}


def start(data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "plexus", "bootstrap", "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        text=True,
    )


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # the process prints or exits within seconds
    assert line, proc.stderr.read() if proc.stderr else ""
    return line


def test_prints_its_address_and_exits_0_on_sigint(tmp_path: Path) -> None:
    proc = start(tmp_path, "--port", "0")
    try:
        addr = first_line(proc)
        assert addr.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in addr
        port = int(addr.split("/")[4])

        # A second peer on the same port fails loudly instead of sharing it.
        second = start(tmp_path / "other", "--port", str(port))
        _, err = second.communicate(timeout=30)
        assert second.returncode == 1
        assert "Address already in use" in err

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert "SIGINT received" in (proc.stderr.read() if proc.stderr else "")
    finally:
        proc.kill()
        proc.wait(timeout=10)

    # The identity persists: a restart keeps the peer id.
    again = start(tmp_path, "--port", "0")
    try:
        assert first_line(again).split("/p2p/")[1] == addr.split("/p2p/")[1]
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=15) == 0
    finally:
        again.kill()
        again.wait(timeout=10)
