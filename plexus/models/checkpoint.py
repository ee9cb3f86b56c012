"""Read chosen tensors from safetensors files without touching the rest.

We parse the (tiny, documented) safetensors header ourselves and `readinto` each
tensor's bytes straight into a freshly allocated tensor: no memory map, so the
process's resident memory grows by the tensors we keep and nothing else. A span of
a 100 GB checkpoint costs the span's bytes, not the file's.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from plexus.errors import ModelError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 * 1024 * 1024

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Every tensor described by one safetensors file's header."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > MAX_HEADER_BYTES:
            raise ModelError(f"{path} declares a {size}-byte header; not a safetensors file")
        header = json.loads(f.read(size))
    base = 8 + size
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ModelError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        entries[name] = TensorEntry(path, dtype, tuple(info["shape"]), base + begin, base + end)
    return entries


def weight_map(folder: Path) -> dict[str, str]:
    """Tensor name -> file name, from the sharded index or the single checkpoint file."""
    index = folder / INDEX_FILE
    if index.exists():
        return dict(json.loads(index.read_text())["weight_map"])
    single = folder / SINGLE_FILE
    if single.exists():
        return dict.fromkeys(read_header(single), SINGLE_FILE)
    raise ModelError(f"{folder} holds no {SINGLE_FILE} or {INDEX_FILE}")


def read_tensors(
    folder: Path,
    files_by_name: dict[str, str],
    names: Iterable[str],
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Load `names` (cast to `dtype` when given) from the files that hold them."""
    wanted = list(names)
    headers: dict[str, dict[str, TensorEntry]] = {}
    out: dict[str, torch.Tensor] = {}
    for name in wanted:
        file_name = files_by_name.get(name)
        if file_name is None:
            raise ModelError(f"checkpoint in {folder} has no tensor {name}")
        if file_name not in headers:
            headers[file_name] = read_header(folder / file_name)
        entry = headers[file_name].get(name)
        if entry is None:
            raise ModelError(f"{folder / file_name} does not contain {name}")
        tensor = _read_entry(entry)
        target = dtype if (dtype is not None and tensor.is_floating_point()) else tensor.dtype
        out[name] = tensor.to(device=device, dtype=target)
    return out


def _read_entry(entry: TensorEntry) -> torch.Tensor:
    tensor = torch.empty(entry.shape, dtype=entry.dtype)
    expected = tensor.numel() * tensor.element_size()
    if expected != entry.nbytes:
        raise ModelError(f"{entry.file}: tensor size {entry.nbytes} does not match its shape")
    view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
    with open(entry.file, "rb", buffering=0) as f:
        f.seek(entry.begin)
        done = 0
        while done < expected:
            n = f.readinto(view[done:])
            if not n:
                raise ModelError(f"{entry.file} is truncated")
            done += n
    return tensor
