"""Peak memory of loading one span of a large checkpoint: it must follow the span, not
the checkpoint. Creates a >= 1 GB Llama-shaped fp32 checkpoint (two shards) if needed.

    python benchmarks/span_memory.py [--dir DIR] [--start 2] [--end 2] [--json]

Prints the checkpoint size, the span's weight bytes, the process' resident memory just
before loading (interpreter + torch + transformers) and its peak after loading.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

BIG = dict(
    vocab_size=1024,
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=6,
    num_attention_heads=32,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_checkpoint(folder: Path) -> None:
    """Write the checkpoint one shard at a time, so the writer never holds it all."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    config = LlamaConfig(**BIG)
    config.save_pretrained(folder)
    h, inter = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    weight_map: dict[str, str] = {}
    layers = list(range(config.num_hidden_layers))
    shards = [layers[: len(layers) // 2], layers[len(layers) // 2 :]]
    for shard_index, shard_layers in enumerate(shards):
        tensors: dict[str, torch.Tensor] = {}
        if shard_index == 0:
            tensors["model.embed_tokens.weight"] = torch.randn(config.vocab_size, h)
        else:
            tensors["model.norm.weight"] = torch.ones(h)
            tensors["lm_head.weight"] = torch.randn(config.vocab_size, h)
        for i in shard_layers:
            p = f"model.layers.{i}."
            for name, shape in {
                "self_attn.q_proj.weight": (h, h),
                "self_attn.k_proj.weight": (kv, h),
                "self_attn.v_proj.weight": (kv, h),
                "self_attn.o_proj.weight": (h, h),
                "mlp.gate_proj.weight": (inter, h),
                "mlp.up_proj.weight": (inter, h),
                "mlp.down_proj.weight": (h, inter),
            }.items():
                tensors[p + name] = torch.full(shape, 0.01)
            tensors[p + "input_layernorm.weight"] = torch.ones(h)
            tensors[p + "post_attention_layernorm.weight"] = torch.ones(h)
        file_name = f"model-{shard_index + 1:05d}-of-00002.safetensors"
        save_file(tensors, str(folder / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file_name))
        del tensors
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="checkpoint folder (kept)")
    parser.add_argument("--start", type=int, default=2)
    parser.add_argument("--end", type=int, default=2)
    parser.add_argument("--write-only", action="store_true", help="create it and exit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.gettempdir()) / "plexus-span-memory-ckpt"
    if not (folder / "model.safetensors.index.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_checkpoint(folder)
    if args.write_only:
        return 0
    import torch  # noqa: F401  (imports count in the baseline, as in a real server)
    import transformers  # noqa: F401

    from plexus.models import load_span

    checkpoint_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    before = current_rss_mb()
    span = load_span(folder, args.start, args.end, progress=False)
    peak = peak_rss_mb()
    result = {
        "checkpoint_mb": round(checkpoint_bytes / 2**20, 1),
        "span": [args.start, args.end],
        "span_weights_mb": round(span.parameter_bytes / 2**20, 1),
        "rss_before_load_mb": round(before, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_minus_span_mb": round(peak - span.parameter_bytes / 2**20, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
