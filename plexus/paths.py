"""Where Plexus keeps its files: identity, ledger, caches, exported models."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """`$PLEXUS_DATA_DIR`, else `$XDG_DATA_HOME/plexus`, else `~/.local/share/plexus`."""
    explicit = os.environ.get("PLEXUS_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "plexus"


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
