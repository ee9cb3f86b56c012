"""Shared fixtures. Sub-folders add their own conftest.py for layer-specific fixtures."""

from __future__ import annotations

import os

# Tests never touch the network beyond loopback, and never a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Identity, caches and models that tests create stay out of the user's home.
if "PLEXUS_DATA_DIR" not in os.environ:
    import tempfile

    os.environ["PLEXUS_DATA_DIR"] = tempfile.mkdtemp(prefix="plexus-tests-")
