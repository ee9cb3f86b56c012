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


import pytest

from tests.model_fixtures import write_model_dirs


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The tiny model and random-weight Llama (tied, sharded), Mistral and Qwen2 folders."""
    return write_model_dirs(tmp_path_factory.mktemp("models"))
