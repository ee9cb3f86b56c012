"""`plexus chat`: talk to a model served by the swarm."""

from __future__ import annotations

import argparse
import sys

from plexus.cli import options

HELP_TEXT = "commands: /reset forgets the conversation, /quit (or Ctrl-D) leaves"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "chat",
        help="chat with a model through the swarm (interactive, or --prompt for scripts)",
        description="Chat with a model whose blocks are served by the swarm. Interactive by "
        "default, with streaming output and a status line (route, tokens/s); "
        f"{HELP_TEXT}. With --prompt, answer one message and exit (--json for one JSON "
        "object with text, token_ids, route and tokens_per_s).",
    )
    parser.add_argument(
        "--model",
        default="plexus-tiny",
        help="hub id, local folder or plexus-tiny (default plexus-tiny)",
    )
    parser.add_argument("--prompt", default=None, help="answer this message and exit")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="with --prompt: complete the text as is, without the chat template",
    )
    parser.add_argument("--system", default=None, help="system message for the conversation")
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="longest reply in tokens (default 128)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature; 0 is greedy (default 0)",
    )
    parser.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="divide logits of tokens already seen by this (1: off)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    parser.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop when this text appears (repeatable)",
    )
    parser.add_argument("--identity", default=None, help="key file (default DATA_DIR/identity.key)")
    parser.add_argument(
        "--no-forwarding",
        action="store_true",
        help="relay every server's output through this client instead of letting each "
        "server send it straight to the next one (slower over real networks)",
    )
    options.add_emulate_latency(parser)
    options.add_common(parser, network=True, reporting=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio

    from plexus.errors import ConfigError
    from plexus.p2p.dht import configure_libp2p_logging

    configure_libp2p_logging(args.log_level)
    if args.max_new_tokens < 1:
        raise ConfigError("--max-new-tokens must be at least 1")
    if not options.initial_peers(args):
        raise ConfigError("no peers to join: pass --initial-peers or set PLEXUS_INITIAL_PEERS")
    return trio.run(_run, args)


def _sampling(args: argparse.Namespace) -> dict:
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": args.stop,
    }


async def _run(args: argparse.Namespace) -> int:
    from plexus.client import AsyncClient

    async with AsyncClient.connect(
        args.model,
        initial_peers=options.initial_peers(args),
        data_dir=options.data_dir(args),
        identity_file=args.identity,
        forwarding=not args.no_forwarding,
        emulate_latency=options.emulated_latency(args),
    ) as client:
        if args.prompt is not None:
            return await _one_shot(client, args)
        return await _interactive(client, args)


async def _one_shot(client, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if args.raw:
        result = await client.generate(
            args.prompt, on_text=None if args.json else show, **_sampling(args)
        )
    else:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": args.prompt})
        result = await client.generate(
            messages=messages, on_text=None if args.json else show, **_sampling(args)
        )
    if args.json:
        options.emit_json(result.as_dict())
    else:
        sys.stdout.write("\n")
        print(_status(result), file=sys.stderr)
    return 0


async def _interactive(client, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    import trio

    chat = client.chat(args.system)
    print(f"connected to {args.model}; {HELP_TEXT}", file=sys.stderr)
    try:
        while True:
            try:
                line = await trio.to_thread.run_sync(lambda: input("you> "))
            except EOFError:
                print(file=sys.stderr)
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text == "/reset":
                await chat.reset()
                print("(conversation forgotten)", file=sys.stderr)
                continue
            if text.startswith("/"):
                print(f"unknown command {text}; {HELP_TEXT}", file=sys.stderr)
                continue
            sys.stdout.write("model> ")
            result = await chat.send(
                text,
                on_text=lambda p: (sys.stdout.write(p), sys.stdout.flush()),
                **_sampling(args),
            )
            sys.stdout.write("\n")
            print(_status(result), file=sys.stderr)
    finally:
        await chat.aclose()
    return 0


def _status(result) -> str:  # type: ignore[no-untyped-def]
    route = " -> ".join(f"{h['peer_id'][-6:]}[{h['start']}-{h['end']}]" for h in result.route)
    extra = f", {result.failovers} failover(s)" if result.failovers else ""
    return (
        f"[{len(result.token_ids)} tokens, {result.tokens_per_s:.1f} tokens/s, "
        f"{result.finish_reason}{extra}; route {route}]"
    )
