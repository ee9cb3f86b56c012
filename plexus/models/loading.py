"""Load a span of blocks, or the client's head, reading only the tensors they need."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from plexus.errors import ModelError
from plexus.models import checkpoint
from plexus.models.families import EMBED_KEY, LAYER_PREFIX, LM_HEAD_KEY, NORM_KEY
from plexus.models.head import ClientHead
from plexus.models.resolve import ModelFiles, open_model
from plexus.models.span import SpanModel

# tqdm's monitor thread wakes every few seconds for the process' whole life; our bars are
# short-lived, and servers should not pay for a stray thread in the decode loop.
tqdm.monitor_interval = 0

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """`fp32`/`bf16`/`fp16` (or a torch dtype); None or `auto` keeps the checkpoint's."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return None
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ModelError(f"unknown dtype {name!r}; choose one of fp32, bf16, fp16, auto") from None


def _as_files(model: ModelFiles | str | Path, data_dir: Path | None) -> ModelFiles:
    return model if isinstance(model, ModelFiles) else open_model(model, data_dir)


def load_span(
    model: ModelFiles | str | Path,
    start: int,
    end: int,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    data_dir: Path | None = None,
    progress: bool = True,
) -> SpanModel:
    """Blocks start..end (inclusive) of `model`, with only their weights read from disk."""
    files = _as_files(model, data_dir)
    n_layers = files.config.num_hidden_layers
    if not 0 <= start <= end < n_layers:
        raise ModelError(f"blocks {start}-{end} are outside {files.ref}'s 0-{n_layers - 1}")
    with torch.device("meta"):
        span = SpanModel(files.config, start, end)
    renamed = {}
    for name in files.weight_map:
        if name.startswith(LAYER_PREFIX):
            index, _, rest = name[len(LAYER_PREFIX) :].partition(".")
            if start <= int(index) <= end:
                renamed[name] = f"layers.{int(index) - start}.{rest}"
    state = _read(files, list(renamed), dtype, device, progress, f"blocks {start}-{end}")
    _assign(span, {renamed[k]: v for k, v in state.items()}, files.ref)
    # Rotary buffers are not in checkpoints: build them on the real device.
    with torch.device(device):
        span.rotary_emb = span.family.rotary_embedding(config=span.config)
    return span.eval()


def load_head(
    model: ModelFiles | str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    data_dir: Path | None = None,
    progress: bool = True,
) -> ClientHead:
    """The client's embeddings, final norm and LM head (one shared tensor when tied)."""
    files = _as_files(model, data_dir)
    tied = bool(files.config.tie_word_embeddings)
    names = [EMBED_KEY, NORM_KEY] + ([] if tied else [LM_HEAD_KEY])
    with torch.device("meta"):
        head = ClientHead(files.config)
    state = _read(files, names, dtype, device, progress, "embeddings and head")
    mapping = {EMBED_KEY: "embed_tokens.weight", NORM_KEY: "norm.weight"}
    mapping[LM_HEAD_KEY] = "lm_head.weight"
    sd = {mapping[k]: v for k, v in state.items()}
    if tied:
        sd["lm_head.weight"] = sd["embed_tokens.weight"]
    _assign(head, sd, files.ref)
    if tied:
        head.lm_head.weight = head.embed_tokens.weight
    return head.eval()


def _read(
    files: ModelFiles,
    names: list[str],
    dtype: str | torch.dtype | None,
    device: str | torch.device,
    progress: bool,
    what: str,
) -> dict[str, torch.Tensor]:
    wmap = files.files_for(names)
    target = parse_dtype(dtype)
    out: dict[str, torch.Tensor] = {}
    quiet = not progress or None  # None: tqdm hides itself when stderr is not a terminal
    bar = tqdm(total=len(names), desc=f"loading {what}", unit="tensor", disable=quiet)
    with bar:
        for name in names:
            out.update(checkpoint.read_tensors(files.folder, wmap, [name], target, device))
            bar.update(1)
    return out


def _assign(module: nn.Module, state: dict[str, torch.Tensor], ref: str) -> None:
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint of {ref} does not match its config: {exc}") from exc
