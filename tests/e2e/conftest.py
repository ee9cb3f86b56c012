"""Fixtures that run real peers as separate processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plexus.local_swarm import LocalSwarm


@pytest.fixture
def local_swarm(tmp_path: Path) -> Iterator[LocalSwarm]:
    """A bootstrap peer; tests start the servers they need. Everything is stopped after."""
    with LocalSwarm(tmp_path / "swarm", log_level="INFO") as swarm:
        swarm.start_bootstrap()
        yield swarm
