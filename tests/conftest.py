"""Shared fixtures. Sub-folders add their own conftest.py for layer-specific fixtures."""

from __future__ import annotations

import os

# Tests never touch the network beyond loopback, and never a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
