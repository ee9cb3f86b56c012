"""`plexus demo`: a whole swarm on this machine, offline, in under a minute or two.

Starts a bootstrap peer and block servers for the embedded tiny model as separate
processes on 127.0.0.1, generates through them, then SIGKILLs a server mid-generation
to show failover, and checks every token against transformers' own generate(). Then it
prints the client's audit results and the receipts its ledger holds from the demo's
servers (read once the client has closed, so every session's final receipt is stored).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from plexus.cli import options

# Two servers for each half: any one can die, and every hop can be audited by the other.
SPANS = ["0-3", "4-7", "0-3", "4-7"]
VICTIM_BLOCK = 4  # the server in use for this block is killed mid-generation


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="run a swarm on this machine and generate through it (offline)",
        description="Create plexus-tiny (a random-weight 8-block Llama test model), start a "
        "bootstrap peer and four block servers (two for blocks 0-3, two for blocks 4-7) as "
        "separate processes on 127.0.0.1, generate through the swarm (the servers pass "
        "hidden states to each other), then kill the server in use for blocks 4-7 "
        "mid-generation. Both generations must give exactly the token ids of "
        "transformers' generate() on the whole model. Then print the audits the client ran "
        "(each hop re-run on the other server of its blocks; after the kill, blocks 4-7 have "
        "no other server left, so that one audit is unavailable), the receipts signed by "
        "both sides with the credits each server earned, and the client's balance (also in "
        "--json: audits, receipts). The tiny model's weights are random, so its text is "
        "noise: what matters is that the tokens match.",
    )
    parser.add_argument("--prompt", default="Hello, Plexus!", help="user message to answer")
    parser.add_argument(
        "--max-new-tokens", type=int, default=24, help="tokens to generate (default 24)"
    )
    parser.add_argument(
        "--no-failover",
        action="store_true",
        help="skip the second generation with a server killed midway",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="no processes: split the model into spans in this process only",
    )
    options.add_common(parser, network=False, reporting=True)
    parser.set_defaults(func=run)


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.json:
        print(message, file=sys.stderr, flush=True)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "·" for c in text)


def reference_tokens(folder, input_ids, max_new_tokens: int, eos: int) -> list[int]:  # type: ignore[no-untyped-def]
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = model.generate(
        input_ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=model.config.pad_token_id,
    )
    ids = out[0, input_ids.shape[1] :].tolist()
    return ids[:-1] if ids and ids[-1] == eos else ids


def run(args: argparse.Namespace) -> int:
    from plexus.errors import ConfigError
    from plexus.models import TINY_MODEL_NAME, open_model
    from plexus.p2p.dht import configure_libp2p_logging

    configure_libp2p_logging(args.log_level)
    if args.max_new_tokens < 2:
        raise ConfigError("--max-new-tokens must be at least 2")
    data_dir = options.data_dir(args)
    started = time.perf_counter()
    files = open_model(TINY_MODEL_NAME, data_dir)
    _say(
        args,
        f"model {TINY_MODEL_NAME}: {files.config.num_hidden_layers} blocks, "
        f"id {files.model_id[:23]}..., at {files.folder}",
    )
    report = _run_local(args, files) if args.local else _run_swarm(args, files, data_dir)
    report["seconds"] = round(time.perf_counter() - started, 1)
    ok = all(r["matches_transformers"] for r in report["runs"])
    report["ok"] = ok
    if args.json:
        options.emit_json(report)
    else:
        verdict = "identical to" if ok else "DIFFERENT from"
        print(
            f"all token ids {verdict} transformers.generate on the whole model "
            f"({report['seconds']} s)"
        )
    return 0 if ok else 1


def _run_local(args: argparse.Namespace, files) -> dict:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from plexus.models import load_head, load_span
    from plexus.models.local_chain import LocalChain

    tokenizer = AutoTokenizer.from_pretrained(files.folder)
    ids = _prompt_ids(tokenizer, args.prompt)
    spans = [tuple(int(x) for x in s.split("-")) for s in SPANS[:2]]
    chain = LocalChain(
        load_head(files, progress=False), [load_span(files, a, b, progress=False) for a, b in spans]
    )
    eos = files.config.eos_token_id
    got = chain.greedy(ids, max_new_tokens=args.max_new_tokens, eos_token_id=eos)
    tokens = [t for t in got.token_ids[0].tolist()]
    if eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    expected = reference_tokens(files.folder, ids, args.max_new_tokens, eos)
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    _say(args, f"spans {', '.join(SPANS[:2])} in this process: {_printable(text)!r}")
    return {
        "mode": "local",
        "runs": [{"token_ids": tokens, "text": text, "matches_transformers": tokens == expected}],
    }


def _prompt_ids(tokenizer, prompt: str):  # type: ignore[no-untyped-def]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


def _run_swarm(args: argparse.Namespace, files, data_dir) -> dict:  # type: ignore[no-untyped-def]
    import trio

    from plexus.local_swarm import LocalSwarm

    root = data_dir / "demo" / time.strftime("%Y%m%d-%H%M%S")
    with LocalSwarm(root) as swarm:
        _say(args, "starting a bootstrap peer ...")
        boot = swarm.start_bootstrap()
        _say(args, f"  {boot.multiaddr}")
        _say(args, f"starting {len(SPANS)} block servers (blocks {', '.join(SPANS)}) ...")
        with ThreadPoolExecutor(len(SPANS)) as pool:
            servers = list(
                pool.map(
                    lambda s: swarm.start_server(
                        "plexus-tiny", s, "--announce-period", "5", "--no-rebalance"
                    ),
                    SPANS,
                )
            )
        for server in servers:
            _say(args, f"  blocks {server.info['start']}-{server.info['end']}: {server.multiaddr}")
        return trio.run(_generate, args, files, data_dir, swarm, servers)


async def _generate(args, files, data_dir, swarm, servers) -> dict:  # type: ignore[no-untyped-def]
    import trio

    from plexus.client import AsyncClient

    report: dict = {"mode": "swarm", "servers": [s.info for s in servers], "runs": []}
    async with AsyncClient.connect(
        "plexus-tiny", initial_peers=swarm.initial_peers, data_dir=data_dir
    ) as client:
        await _generations(args, files, client, servers, report)
        auditor = client.auditor
    # The client has closed: its sessions are closed and every receipt they left is stored
    # (receipts are written in the background; the client waits for them when it closes).
    report.update(await trio.to_thread.run_sync(_accounts, auditor, servers))
    _say(args, _describe_accounts(report))
    return report


async def _generations(args, files, client, servers, report: dict) -> None:  # type: ignore[no-untyped-def]
    """The plain generation, then (unless --no-failover) one that loses a server midway."""
    import signal

    import trio

    ids = _prompt_ids(client.tokenizer, args.prompt)
    eos = files.config.eos_token_id
    expected = await trio.to_thread.run_sync(
        lambda: reference_tokens(files.folder, ids, args.max_new_tokens, eos)
    )
    messages = [{"role": "user", "content": args.prompt}]
    # Every announcement must be visible before the first route is planned.
    with trio.move_on_after(30):
        while len(await client.swarm.node.find_servers(client.swarm.model_id)) < len(servers):
            await trio.sleep(0.5)
    result = await client.generate(messages=messages, max_new_tokens=args.max_new_tokens)
    _say(args, _describe("swarm", result, expected))
    report["runs"].append(_run_report("swarm", result, expected))
    if args.no_failover:
        return

    by_peer = {s.peer_id: s for s in servers}
    victim: list = []
    count = 0

    def on_token(_token: int) -> None:
        nonlocal count
        count += 1
        if count == max(1, args.max_new_tokens // 3) and not victim:
            route = client.swarm_route()
            hop = next(h for h in route if h["start"] <= VICTIM_BLOCK <= h["end"])
            victim.append(by_peer[hop["peer_id"]])
            victim[0].signal(signal.SIGKILL)
            _say(
                args,
                f"  SIGKILLed {hop['peer_id'][-8:]} (blocks {hop['start']}-"
                f"{hop['end']}) after {count} tokens",
            )

    _say(args, "generating again, killing a server midway ...")
    result = await client.generate(
        messages=messages, max_new_tokens=args.max_new_tokens, on_token=on_token
    )
    _say(args, _describe("failover", result, expected))
    report["runs"].append(_run_report("failover", result, expected))


def _accounts(auditor, servers) -> dict:  # type: ignore[no-untyped-def]
    """The client's audit results and the receipts its ledger holds from this demo's
    servers: how many, and what each server was paid (the ledger's own balance rules)."""
    from ledger.store import LedgerStore
    from ledger.units import credits
    from plexus.identity import public_key_of

    if auditor is None or auditor.ledger is None:
        return {}
    stats = auditor.stats
    audits = {
        name: getattr(stats, name)
        for name in ("audits", "passed", "failed", "convictions", "skipped", "unavailable")
    }
    names = {public_key_of(s.peer_id): s.peer_id for s in servers}
    me = auditor.identity.public_key_bytes
    # The same database as auditor.ledger, which the client closed on its way out.
    with LedgerStore(auditor.ledger.url, create=False) as store:
        counts: dict[str, int] = {}
        for signed in store.iter_receipts():  # every stored receipt has both signatures
            r = signed.receipt
            if r.server_key in names and r.client_key == me:
                counts[names[r.server_key]] = counts.get(names[r.server_key], 0) + 1
        accounts = store.balances()
    paid = {
        peer: credits(accounts[key].earned) if key in accounts else 0.0
        for key, peer in names.items()
        if peer in counts
    }
    mine = accounts.get(me)
    return {
        "audits": audits,
        "receipts": {
            "count": sum(counts.values()),
            "count_by_server": counts,
            "credits_by_server": paid,
            "client_peer_id": auditor.identity.peer_id_str,
            "client_balance": credits(mine.balance) if mine else 0.0,
        },
    }


def _describe_accounts(report: dict) -> str:
    if "audits" not in report:
        return "verification is off: no audits, no receipts"
    a, r = report["audits"], report["receipts"]
    lines = [
        f"audits: {a['audits']} (a hop's steps re-run on another server of its blocks): "
        f"{a['passed']} passed, {a['failed']} failed, {a['convictions']} conviction(s); "
        f"{a['skipped']} hop(s) not drawn for audit, {a['unavailable']} with no other "
        "server left to audit them",
        f"receipts: {r['count']} signed by server and client; the client paid "
        f"{sum(r['credits_by_server'].values()):.3f} credits (its balance over every "
        f"session in its ledger: {r['client_balance']:.3f}):",
    ]
    for peer, amount in sorted(r["credits_by_server"].items()):
        lines.append(
            f"  server {peer[-8:]}: {r['count_by_server'][peer]} receipt(s), "
            f"earned {amount:.3f} credits"
        )
    return "\n".join(lines)


def _describe(label: str, result, expected: list[int]) -> str:  # type: ignore[no-untyped-def]
    route = " -> ".join(f"[{h['start']}-{h['end']}] {str(h['peer_id'])[-8:]}" for h in result.route)
    same = "same tokens as transformers" if result.token_ids == expected else "TOKENS DIFFER"
    return (
        f"{label}: {len(result.token_ids)} tokens at {result.tokens_per_s:.1f} tokens/s "
        f"via {route}, {result.failovers} failover(s); {same}\n"
        f"  text: {_printable(result.text)!r}"
    )


def _run_report(label: str, result, expected: list[int]) -> dict:  # type: ignore[no-untyped-def]
    return {
        "label": label,
        **result.as_dict(),
        "matches_transformers": result.token_ids == expected,
    }
