"""The embedded tiny model: deterministic bytes, loads offline with plain transformers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from plexus.models.resolve import open_model

LOAD_OFFLINE = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(folder)
tok = AutoTokenizer.from_pretrained(folder)
text = tok.apply_chat_template([{"role": "user", "content": "hé"}], add_generation_prompt=True,
                               tokenize=False)
ids = tok(text, add_special_tokens=False).input_ids
print(json.dumps({"layers": model.config.num_hidden_layers, "arch": type(model).__name__,
                  "text": text, "roundtrip": tok.decode(ids), "n_ids": len(ids),
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_plexus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plexus", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_cli_writes_identical_weights_twice(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        done = run_plexus("models", "tiny", "--out", str(out), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["path"] == str(out.resolve())
    assert sha256(first / "model.safetensors") == sha256(second / "model.safetensors")
    assert sha256(first / "tokenizer.json") == sha256(second / "tokenizer.json")
    size = (first / "model.safetensors").stat().st_size
    assert 1_000_000 < size < 20_000_000, "a few MB"


def test_folder_loads_with_plain_transformers_offline(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    assert run_plexus("models", "tiny", "--out", str(folder)).returncode == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nope"}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_OFFLINE, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["arch"] == "LlamaForCausalLM"
    assert info["layers"] >= 8
    assert info["text"] == "<|begin|><|user|>hé<|end|><|assistant|>"
    assert info["roundtrip"] == info["text"]


def test_name_plexus_tiny_resolves_under_the_data_dir(tmp_path: Path) -> None:
    files = open_model("plexus-tiny", tmp_path)
    assert files.folder == tmp_path / "models" / "plexus-tiny"
    again = open_model("plexus-tiny", tmp_path)
    assert files.model_id == again.model_id
    assert files.model_id.startswith("sha256:")


def test_model_id_depends_on_weights_not_location(tmp_path: Path) -> None:
    tiny = open_model("plexus-tiny", tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in tiny.folder.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    assert open_model(copy).model_id == tiny.model_id
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert open_model(copy).model_id != tiny.model_id


def test_local_demo_matches_transformers(tmp_path: Path) -> None:
    done = run_plexus(
        "demo", "--local", "--data-dir", str(tmp_path), "--json", "--max-new-tokens", "12"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert [run["matches_transformers"] for run in report["runs"]] == [True]
    assert 0 < len(report["runs"][0]["token_ids"]) <= 12
