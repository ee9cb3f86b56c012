"""Measured compute speed of a span, cached per device, model and dtype."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from plexus.models.session import SpanSession
from plexus.models.span import SpanModel

log = logging.getLogger(__name__)


def measure_tokens_per_second(span: SpanModel, steps: int = 16) -> float:
    """Decode throughput per block: one-token steps per second times blocks."""
    param = next(span.parameters())
    session = SpanSession(span)
    hidden = torch.randn(1, 16, span.config.hidden_size, device=param.device, dtype=param.dtype)
    session.step(hidden)
    token = hidden[:, :1]
    session.step(token)  # warm-up
    if param.device.type == "cuda":
        torch.cuda.synchronize(param.device)
    started = time.perf_counter()
    for _ in range(steps):
        session.step(token)
    if param.device.type == "cuda":
        torch.cuda.synchronize(param.device)
    elapsed = max(time.perf_counter() - started, 1e-9)
    return steps * span.num_blocks / elapsed


def cached_throughput(
    span: SpanModel, model_id: str, device_name: str, cache_dir: Path, refresh: bool = False
) -> float:
    """The span's throughput from the cache, measuring (and caching) it when missing."""
    dtype = str(next(span.parameters()).dtype).removeprefix("torch.")
    key = f"{device_name}|{model_id}|{dtype}|torch-{torch.__version__}"
    path = cache_dir / "throughput.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), int | float) and cache[key] > 0:
        log.info("throughput %.1f tokens/s per block (cached)", cache[key])
        return float(cache[key])
    value = measure_tokens_per_second(span)
    log.info("measured throughput: %.1f tokens/s per block", value)
    cache[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot cache throughput in %s: %s", path, exc)
    return value
