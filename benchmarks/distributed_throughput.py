"""Tokens/s of a session through 2 server processes vs single-process generate().

    python benchmarks/distributed_throughput.py [--sizes 30M 300M] [--new-tokens 64] [--json]

For each Llama shape: writes random weights (cached under --dir), runs transformers'
greedy generate() in this process, then starts a bootstrap peer and two `plexus serve`
processes (half the blocks each) on 127.0.0.1 and generates the same tokens through
them with the client library. Prints tokens/s of both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import trio
from transformers import AutoModelForCausalLM, LlamaConfig

from plexus.client import AsyncClient
from plexus.local_swarm import LocalSwarm

SHAPES = {
    "30M": dict(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=8000,
    ),
    "300M": dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
}


def model_folder(root: Path, size: str) -> Path:
    folder = root / f"llama-{size}"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        config = LlamaConfig(
            **SHAPES[size], max_position_embeddings=1024, pad_token_id=0, tie_word_embeddings=False
        )
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(folder)
    return folder


def local_tokens_per_s(folder: Path, prompt: list[int], new_tokens: int) -> tuple[float, list]:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
    best = 0.0
    tokens: list[int] = []
    for _ in range(2):
        started = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        best = max(best, new_tokens / (time.perf_counter() - started))
        tokens = out[0, len(prompt) :].tolist()
    del model
    return best, tokens


async def swarm_tokens_per_s(
    boot: str, folder: Path, data_dir: Path, prompt: list[int], new_tokens: int
) -> tuple[float, list[int]]:
    async with AsyncClient.connect(str(folder), initial_peers=[boot], data_dir=data_dir) as c:
        with trio.fail_after(60):
            while len(await c.swarm.node.find_servers(c.swarm.model_id)) < 2:
                await trio.sleep(0.5)
        await c.swarm.refresh(force=True)
        await c.generate_ids(prompt, max_new_tokens=4, eos=False)  # warm-up
        best, tokens = 0.0, []
        for _ in range(2):
            started = time.perf_counter()
            result = await c.generate_ids(prompt, max_new_tokens=new_tokens, eos=False)
            best = max(best, new_tokens / (time.perf_counter() - started))
            tokens = result.token_ids
        return best, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "plexus-bench")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        folder = model_folder(args.dir, size)
        prompt = torch.randint(
            1, 1000, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1)
        ).tolist()
        local, expected = local_tokens_per_s(folder, prompt, args.new_tokens)
        n = AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers
        with LocalSwarm(args.dir / f"swarm-{size}-{os.getpid()}") as swarm:
            swarm.start_bootstrap()
            for span in (f"0-{n // 2 - 1}", f"{n // 2}-{n - 1}"):
                swarm.start_server(str(folder), span, "--no-rebalance", "--dtype", "fp32")
            distributed, got = trio.run(
                swarm_tokens_per_s,
                swarm.initial_peers[0],
                folder,
                args.dir / "client",
                prompt,
                args.new_tokens,
            )
        results.append(
            {
                "model": f"llama-{size}",
                "parameters_m": round(
                    sum(
                        p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters()
                    )
                    / 1e6,
                    1,
                ),
                "local_tokens_per_s": round(local, 2),
                "distributed_tokens_per_s": round(distributed, 2),
                "ratio": round(distributed / local, 3),
                "same_tokens": got == expected,
                "threads": torch.get_num_threads(),
            }
        )
        print(
            json.dumps(results[-1])
            if args.json
            else "{model}: {parameters_m}M params, local {local_tokens_per_s} tok/s, "
            "2 servers {distributed_tokens_per_s} tok/s, ratio {ratio}, same tokens: "
            "{same_tokens}".format(**results[-1]),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
