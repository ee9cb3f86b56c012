"""Find a model's files: a local Hugging Face folder, a hub id, or `plexus-tiny`.

From the hub only the files a caller needs are downloaded (config first, then just
the safetensors shards that hold the requested tensors), with progress bars.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

from plexus.errors import ModelError
from plexus.models import checkpoint
from plexus.paths import default_data_dir

TINY_MODEL_NAME = "plexus-tiny"
MODEL_ID_DOMAIN = b"plexus-model-id-v1\n"


@dataclass
class ModelFiles:
    """A model's config and where each of its tensors lives."""

    ref: str
    folder: Path
    config: PretrainedConfig
    repo_id: str | None = None  # set when the files come from the hub
    revision: str | None = None
    _weight_map: dict[str, str] | None = field(default=None, repr=False)

    @property
    def weight_map(self) -> dict[str, str]:
        if self._weight_map is None:
            if self.repo_id:
                self._ensure(
                    [checkpoint.INDEX_FILE]
                    if self._hub_has(checkpoint.INDEX_FILE)
                    else [checkpoint.SINGLE_FILE]
                )
            self._weight_map = checkpoint.weight_map(self.folder)
        return self._weight_map

    def files_for(self, names: list[str]) -> dict[str, str]:
        """The weight map restricted to `names`, after downloading the files that hold them."""
        wmap = self.weight_map
        missing = [n for n in names if n not in wmap]
        if missing:
            raise ModelError(f"{self.ref} has no tensors {missing[:3]}...")
        if self.repo_id:
            self._ensure(sorted({wmap[n] for n in names}))
        return wmap

    def _hub_has(self, filename: str) -> bool:
        from huggingface_hub import file_exists

        return file_exists(self.repo_id, filename, revision=self.revision)

    def _ensure(self, filenames: list[str]) -> None:
        from huggingface_hub import hf_hub_download

        for name in filenames:
            if not (self.folder / name).exists():
                hf_hub_download(self.repo_id, name, revision=self.revision)

    @property
    def model_id(self) -> str:
        """`sha256:<hex>` over the weight files' SHA-256s: the same weights give the same id
        whether read from a folder or the hub; different weights never share one."""
        digests = self._hub_digests() if self.repo_id else self._local_digests()
        h = hashlib.sha256(MODEL_ID_DOMAIN)
        for name in sorted(digests):
            h.update(f"{name} {digests[name]}\n".encode())
        return "sha256:" + h.hexdigest()

    def _weight_files(self) -> list[str]:
        return sorted(set(self.weight_map.values()))

    def _local_digests(self) -> dict[str, str]:
        return {name: file_sha256(self.folder / name) for name in self._weight_files()}

    def _hub_digests(self) -> dict[str, str]:
        from huggingface_hub import HfApi

        info = HfApi().model_info(self.repo_id, revision=self.revision, files_metadata=True)
        wanted = set(self._weight_files())
        digests = {s.rfilename: s.lfs.sha256 for s in info.siblings or [] if s.lfs}
        if not wanted <= digests.keys():
            raise ModelError(f"hub metadata for {self.repo_id} lacks hashes of {wanted}")
        return {name: digests[name] for name in wanted}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, cached beside the data dir by (path, size, mtime)."""
    stat = path.stat()
    cache_file = default_data_dir() / "cache" / "sha256.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    cache[key] = h.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
    except OSError:
        pass  # the cache is an optimisation; a read-only data dir must not fail a load
    return cache[key]


def load_config(folder: Path) -> PretrainedConfig:
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "_attn_implementation", None) is None:
        config._attn_implementation = "sdpa"  # pitfall: None silently ignores padding
    return config


def open_model(
    ref: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None
) -> ModelFiles:
    """Resolve `ref` to its files; `plexus-tiny` is written under the data dir on first use."""
    ref = str(ref)
    if ref == TINY_MODEL_NAME:
        from plexus.models.tiny import ensure_tiny_model

        base = Path(data_dir) if data_dir else default_data_dir()
        folder = ensure_tiny_model(base / "models" / TINY_MODEL_NAME)
        return ModelFiles(ref, folder, load_config(folder))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        return ModelFiles(ref, path, load_config(path))
    if path.exists() or ref.startswith((".", "/")) or ref.count("/") > 1:
        raise ModelError(f"model {ref!r} is neither a model folder nor a hub id")
    return _open_hub_model(ref)


def _open_hub_model(ref: str) -> ModelFiles:
    repo_id, _, revision = ref.partition("@")
    try:
        from huggingface_hub import hf_hub_download

        config_path = Path(hf_hub_download(repo_id, "config.json", revision=revision or None))
    except Exception as exc:  # hub errors come in many types (offline, 404, auth)
        raise ModelError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
            f"pass a local model folder, or use {TINY_MODEL_NAME!r} offline"
        ) from exc
    folder = config_path.parent
    return ModelFiles(ref, folder, load_config(folder), repo_id=repo_id, revision=revision or None)
