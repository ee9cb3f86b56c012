"""How much memory this device can give to blocks and caches."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

# Keep this much free for the interpreter, torch, activations and the OS.
CPU_RESERVE_BYTES = 2 * 2**30
CUDA_RESERVE_BYTES = 1 * 2**30


@dataclass(frozen=True)
class DeviceMemory:
    device: str
    total_bytes: int
    free_bytes: int
    name: str

    @property
    def usable_bytes(self) -> int:
        reserve = CUDA_RESERVE_BYTES if self.device.startswith("cuda") else CPU_RESERVE_BYTES
        return max(0, self.free_bytes - reserve)


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def device_memory(device: str) -> DeviceMemory:
    """Free and total memory of `device`: pynvml for CUDA, /proc/meminfo for the CPU."""
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                return DeviceMemory(device, int(info.total), int(info.free), name)
            finally:
                pynvml.nvmlShutdown()
        except Exception as exc:  # NVML missing or failing: fall back to torch's view
            log.warning("pynvml unavailable (%s); using torch.cuda.mem_get_info", exc)
            free, total = torch.cuda.mem_get_info(index)
            return DeviceMemory(device, total, free, torch.cuda.get_device_name(index))
    return DeviceMemory("cpu", *_cpu_memory(), name=f"cpu ({os.cpu_count()} cores)")


def _cpu_memory() -> tuple[int, int]:
    fields: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields["MemFree"])
    except (OSError, KeyError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total // 2


def kv_bytes_per_token(config, dtype: torch.dtype, num_blocks: int) -> int:  # type: ignore[no-untyped-def]
    """Bytes of keys+values one token costs across `num_blocks` blocks."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * num_blocks * kv_heads * head_dim * itemsize
