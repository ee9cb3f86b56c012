"""Start a bootstrap peer and block servers as separate processes on 127.0.0.1.

Used by `plexus demo`, the multi-process tests and the benchmarks. Every process is
started with `--json` and waited for until it prints its ready line; `close()` (or the
context manager) terminates whatever is still running.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from plexus.errors import PlexusError

READY_TIMEOUT_S = 120.0


class LaunchError(PlexusError):
    """A local peer process failed to start."""


@dataclass
class PeerProcess:
    name: str
    process: subprocess.Popen[str]
    info: dict[str, Any]
    log_path: Path
    _lines: list[str] = field(default_factory=list)

    @property
    def multiaddr(self) -> str:
        return str(self.info["multiaddrs"][0])

    @property
    def peer_id(self) -> str:
        return str(self.info["peer_id"])

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)


class LocalSwarm:
    """A bootstrap peer and servers for one model, each in its own process."""

    def __init__(self, root: Path, *, log_level: str = "WARNING", env: dict | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_level = log_level
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.peers: list[PeerProcess] = []
        self.bootstrap: PeerProcess | None = None
        self._names = itertools.count()
        self._lock = threading.Lock()

    def __enter__(self) -> LocalSwarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str, args: list[str], timeout: float) -> PeerProcess:
        data_dir = self.root / name
        log_path = self.root / f"{name}.log"
        cmd = [
            sys.executable,
            "-m",
            "plexus",
            *args,
            "--json",
            "--log-level",
            self.log_level,
            "--data-dir",
            str(data_dir),
        ]
        log_file = open(log_path, "w")  # noqa: SIM115  (closed when the process ends)
        process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        line = _read_line(process.stdout, timeout)  # type: ignore[arg-type]
        if not line:
            process.kill()
            process.wait(10)
            log_file.close()
            tail = log_path.read_text()[-3000:]
            raise LaunchError(f"{name} did not start ({' '.join(args)}):\n{tail}")
        peer = PeerProcess(name, process, json.loads(line), log_path)
        # Keep draining stdout so the child never blocks on a full pipe.
        threading.Thread(target=_drain, args=(process.stdout, peer._lines), daemon=True).start()
        with self._lock:
            self.peers.append(peer)
        return peer

    def start_bootstrap(self, timeout: float = READY_TIMEOUT_S) -> PeerProcess:
        self.bootstrap = self._spawn("bootstrap", ["bootstrap", "--port", "0"], timeout)
        return self.bootstrap

    def start_server(
        self,
        model: str = "plexus-tiny",
        shards: str | None = None,
        *extra: str,
        name: str | None = None,
        timeout: float = READY_TIMEOUT_S,
    ) -> PeerProcess:
        if self.bootstrap is None:
            raise LaunchError("start the bootstrap peer first")
        args = ["serve", "--model", model, "--initial-peers", self.bootstrap.multiaddr, *extra]
        if shards:
            args += ["--shards", shards]
        with self._lock:  # servers may be started from several threads at once
            name = name or f"server{next(self._names)}"
        return self._spawn(name, args, timeout)

    @property
    def initial_peers(self) -> list[str]:
        return [self.bootstrap.multiaddr] if self.bootstrap else []

    def close(self, timeout: float = 15.0) -> None:
        """SIGTERM the servers (so they can withdraw through the bootstrap), then the
        bootstrap; SIGKILL whatever has not exited by `timeout`."""
        servers = [p for p in self.peers if p is not self.bootstrap]
        last = [self.bootstrap] if self.bootstrap in self.peers else []
        deadline = time.monotonic() + timeout
        for group in (servers, last):
            for peer in group:
                peer.signal(signal.SIGTERM)
            for peer in group:
                try:
                    peer.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    peer.process.kill()
                    peer.process.wait(10)
        self.peers = []


def _read_line(stream: IO[str], timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""


def _drain(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line)
