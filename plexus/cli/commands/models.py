"""`plexus models`: create the embedded tiny model, and describe any model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plexus.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "models",
        help="create the embedded tiny model or inspect a model",
        description="Create Plexus' embedded tiny model, or describe any model Plexus can load.",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    tiny = actions.add_parser(
        "tiny",
        help="write the tiny Llama-architecture test model as a Hugging Face folder",
        description="Write plexus-tiny (8 blocks, deterministic weights, byte-level "
        "tokenizer with a chat template) as a standard Hugging Face folder that "
        "transformers loads offline. The same bytes on every run and machine.",
    )
    tiny.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    options.add_common(tiny, network=False, reporting=True)
    tiny.set_defaults(func=run_tiny)

    info = actions.add_parser(
        "info",
        help="print a model's family, blocks, sizes and Plexus model id",
        description="Describe a model: a local Hugging Face folder, a hub id, or plexus-tiny.",
    )
    info.add_argument("model", help="hub id, local folder, or plexus-tiny")
    options.add_common(info, network=False, reporting=True)
    info.set_defaults(func=run_info)


def run_tiny(args: argparse.Namespace) -> int:
    from plexus.models.tiny import write_tiny_model

    folder = write_tiny_model(args.out)
    if args.json:
        options.emit_json({"path": str(folder.resolve())})
    else:
        print(f"wrote plexus-tiny to {folder}", file=sys.stderr)
        print(folder.resolve())
    return 0


def run_info(args: argparse.Namespace) -> int:
    from plexus.models.families import family_of
    from plexus.models.resolve import open_model

    files = open_model(args.model, options.data_dir(args))
    config = files.config
    family = family_of(config)
    block_params = _block_parameters(files)
    report = {
        "model": args.model,
        "model_id": files.model_id,
        "family": family.name,
        "num_blocks": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "tied_embeddings": bool(config.tie_word_embeddings),
        "parameters_per_block": block_params,
        "folder": str(files.folder),
    }
    if args.json:
        options.emit_json(report)
    else:
        for key, value in report.items():
            print(f"{key:>22}: {value}")
    return 0


def _block_parameters(files) -> int:  # type: ignore[no-untyped-def]
    from plexus.models.checkpoint import read_header

    prefix = "model.layers.0."
    names = [n for n in files.weight_map if n.startswith(prefix)]
    total = 0
    for file_name in sorted({files.weight_map[n] for n in names}):
        for name, entry in read_header(files.folder / file_name).items():
            if name.startswith(prefix):
                total += entry.nbytes // entry.dtype.itemsize
    return total
