"""`plexus-tiny`: a small Llama-architecture model that Plexus creates itself, offline.

The weights come from SHAKE-256 streams keyed by tensor name, so the bytes are the same
on every run, machine and torch version. The tokenizer is byte-level BPE without merges
(every UTF-8 byte is a token) plus three special tokens, built with `tokenizers`; the
folder is a standard Hugging Face model folder with a chat template.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast

SEED = b"plexus-tiny-v1"
SPECIAL_TOKENS = ["<|begin|>", "<|end|>", "<|pad|>"]
BYTE_VOCAB = 256
VOCAB_SIZE = 320  # 256 bytes + 3 special tokens, rounded up
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=BYTE_VOCAB,
        eos_token_id=BYTE_VOCAB + 1,
        pad_token_id=BYTE_VOCAB + 2,
        architectures=["LlamaForCausalLM"],
        dtype="float32",
    )


def _uniform(name: str, shape: tuple[int, ...], std: float) -> torch.Tensor:
    """Deterministic values with standard deviation `std`, from SHAKE-256(seed, name)."""
    count = math.prod(shape)
    raw = hashlib.shake_256(SEED + b"/" + name.encode()).digest(4 * count)
    unit = np.frombuffer(raw, dtype="<u4").astype(np.float64) / 2**32  # [0, 1)
    values = (unit * 2.0 - 1.0) * std * math.sqrt(3.0)
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def tiny_state_dict(config: LlamaConfig) -> dict[str, torch.Tensor]:
    h, inter, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        }
    shapes["lm_head.weight"] = (v, h)
    state = {name: _uniform(name, shape, 0.08) for name, shape in shapes.items()}
    for i in range(config.num_hidden_layers):
        state[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(h)
        state[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(h)
    state["model.norm.weight"] = torch.ones(h)
    return dict(sorted(state.items()))


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {char: byte for byte, char in _byte_to_char().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS[0],
        eos_token=SPECIAL_TOKENS[1],
        pad_token=SPECIAL_TOKENS[2],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def _byte_to_char() -> dict[int, str]:
    """GPT-2's byte-to-unicode map, which the ByteLevel pre-tokenizer uses."""
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def write_tiny_model(out: Path) -> Path:
    """Write the tiny model folder at `out` (weights, config, tokenizer, generation config)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config()
    save_file(tiny_state_dict(config), str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": config.bos_token_id,
                "eos_token_id": config.eos_token_id,
                "pad_token_id": config.pad_token_id,
                "do_sample": False,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    tiny_tokenizer().save_pretrained(out)
    return out


def ensure_tiny_model(folder: Path) -> Path:
    """The tiny model at `folder`, written atomically on first use (safe across processes)."""
    folder = Path(folder)
    if (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".plexus-tiny-", dir=folder.parent))
    try:
        write_tiny_model(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
