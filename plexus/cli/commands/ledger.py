"""`plexus ledger`: check a ledger database; show balances, receipts and reputations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from plexus.cli import options

LEDGER_FILE_NAME = "ledger.sqlite"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ledger",
        help="verify the ledger; show balances, receipts and reputations",
        description="Inspect this peer's ledger: signed receipts of work, fraud proofs and "
        "audit verdicts, and the balances computed from them (docs/ledger.md).",
    )
    actions = parser.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify",
        help="re-verify every stored signature and the database's integrity",
        description="Re-check every stored receipt, fraud proof and audit report (strict "
        "parsing, network id, ids, both signatures) and the database (SQLite "
        "integrity_check). Exits 1 if anything is wrong.",
    )
    _add_ledger_options(verify)
    verify.set_defaults(func=run_verify)

    balances = actions.add_parser(
        "balances",
        help="print every key's credits earned, spent and balance",
        description="Balances in credits (1 credit = one reference-size block on one token; "
        "docs/ledger.md), computed from the stored receipts and fraud proofs.",
    )
    _add_ledger_options(balances)
    balances.add_argument(
        "--free-lane",
        type=float,
        default=None,
        metavar="CREDITS",
        help="how far a client may run into debt (default: the ledger's, 100000; "
        "negative: no limit)",
    )
    balances.set_defaults(func=run_balances)

    balance = actions.add_parser(
        "balance",
        help="one peer's credits earned, spent and balance",
        description="The account of one peer (default: this peer, from its identity key) "
        "in credits, computed from the stored receipts and fraud proofs. A peer the ledger "
        "has never seen has an empty account.",
    )
    _add_ledger_options(balance)
    balance.add_argument(
        "peer",
        nargs="?",
        default=None,
        metavar="PEER",
        help="a peer id (12D3KooW...) or a 64-hex-digit public key (default: this peer)",
    )
    _add_identity_option(balance)
    balance.set_defaults(func=run_balance)

    receipts = actions.add_parser(
        "receipts",
        help="list the stored receipts",
        description="The stored doubly signed receipts, newest first: server, client, model, "
        "blocks, session, seq, tokens and the cumulative amount in credits.",
    )
    _add_ledger_options(receipts)
    receipts.add_argument(
        "--peer",
        default=None,
        metavar="PEER",
        help="only receipts where this peer (peer id or public key hex) is server or client",
    )
    receipts.add_argument(
        "--limit", type=int, default=None, metavar="N", help="at most N receipts (newest)"
    )
    receipts.set_defaults(func=run_receipts)

    reputation = actions.add_parser(
        "reputation",
        help="every server's reputation from stored audits and fraud proofs",
        description="Reputation per server (0..1: slow to earn, quick to lose; 0 and banned "
        "after a fraud proof), from the stored audit verdicts. By default only verdicts this "
        "peer signed count (as its client does when it routes); --all-auditors counts every "
        "stored verdict.",
    )
    _add_ledger_options(reputation)
    _add_identity_option(reputation)
    reputation.add_argument(
        "--all-auditors",
        action="store_true",
        help="count the verdicts of every auditor, not only this peer's",
    )
    reputation.set_defaults(func=run_reputation)


def _add_ledger_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger-url",
        default=None,
        metavar="URL",
        help="SQLAlchemy database URL, e.g. postgresql://user@host/db "
        f"(default: sqlite under --data-dir, <data-dir>/{LEDGER_FILE_NAME})",
    )
    options.add_common(parser, network=False, reporting=True)


def _add_identity_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--identity",
        type=Path,
        default=None,
        metavar="FILE",
        help="this peer's key file (default DATA_DIR/identity.key)",
    )


def ledger_url(args: argparse.Namespace) -> str:
    from ledger.engine import sqlite_url

    if args.ledger_url:
        return str(args.ledger_url)
    return sqlite_url(Path(options.data_dir(args)) / LEDGER_FILE_NAME)


def _with_store(args: argparse.Namespace, body: Callable[..., int]) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from ledger.errors import LedgerError
    from ledger.store import LedgerStore

    try:
        store = LedgerStore(ledger_url(args), create=False)
    except (LedgerError, SQLAlchemyError) as exc:
        return _fail(args, f"cannot open the ledger: {exc}")
    try:
        return body(store)
    except (LedgerError, SQLAlchemyError) as exc:
        return _fail(args, str(exc))
    finally:
        store.close()


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.json:
        options.emit_json({"ok": False, "error": message})
    print(f"plexus ledger: error: {message}", file=sys.stderr)
    return 1


def run_verify(args: argparse.Namespace) -> int:
    from ledger.verify import verify_store

    def body(store) -> int:  # type: ignore[no-untyped-def]
        report = verify_store(store)
        if args.json:
            options.emit_json(report.to_json())
        else:
            status = "OK" if report.ok else "PROBLEMS FOUND"
            print(f"ledger {status} (network {report.network_id}, {report.dialect}, "
                  f"schema v{report.schema_version}, integrity {report.integrity})")  # fmt: skip
            for kind, count in report.checked.items():
                print(f"{kind:>18}: {count} checked, {report.bad.get(kind, 0)} bad")
            for kind, reasons in sorted(report.rejections.items()):
                refused = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
                print(f"{'refused ' + kind:>18}: {refused}")
            for problem in report.problems:
                print(f"problem: {problem}", file=sys.stderr)
        return 0 if report.ok else 1

    return _with_store(args, body)


def _key_name(key: bytes) -> str:
    from plexus.identity import peer_id_of

    try:
        return peer_id_of(key)
    except ValueError:
        return key.hex()


def run_balances(args: argparse.Namespace) -> int:
    from ledger.balances import DEFAULT_FREE_LANE
    from ledger.units import MILLI, credits

    if args.free_lane is None:
        free_lane: int | None = DEFAULT_FREE_LANE
    else:
        free_lane = None if args.free_lane < 0 else round(args.free_lane * MILLI)

    def body(store) -> int:  # type: ignore[no-untyped-def]
        accounts = store.balances(free_lane=free_lane)
        rows = [
            {
                "key": key.hex(),
                "peer_id": _key_name(key),
                "earned": credits(a.earned),
                "spent": credits(a.spent),
                "balance": credits(a.balance),
                "unpaid": credits(a.unpaid),
                "forfeited": credits(a.forfeited),
            }
            for key, a in accounts.items()
        ]
        rows.sort(key=lambda row: (-row["balance"], row["key"]))
        if args.json:
            options.emit_json({"network_id": store.network_id, "unit": "credits", "accounts": rows})
            return 0
        print(f"{'peer':<54} {'earned':>14} {'spent':>14} {'balance':>14}")
        for row in rows:
            print(
                f"{row['peer_id']:<54} {row['earned']:>14.3f} {row['spent']:>14.3f} "
                f"{row['balance']:>14.3f}"
            )
        return 0

    return _with_store(args, body)


def _parse_peer(text: str) -> bytes:
    """A peer id or a 64-hex public key -> raw public key (ConfigError otherwise)."""
    from plexus.errors import ConfigError
    from plexus.identity import public_key_of

    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        return public_key_of(text)
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither a peer id (12D3KooW...) nor a 64-hex-digit public key"
        ) from None


def _own_key(args: argparse.Namespace) -> bytes | None:
    """This peer's public key, if its identity file exists (never creates one)."""
    from plexus.identity import Identity

    path = args.identity or Path(options.data_dir(args)) / "identity.key"
    if not Path(path).exists():
        return None
    return Identity.load_or_create(Path(path)).public_key_bytes


def _account_row(key: bytes, account) -> dict:  # type: ignore[no-untyped-def]
    from ledger.units import credits

    return {
        "key": key.hex(),
        "peer_id": _key_name(key),
        "earned": credits(account.earned),
        "spent": credits(account.spent),
        "balance": credits(account.balance),
        "unpaid": credits(account.unpaid),
        "forfeited": credits(account.forfeited),
    }


def run_balance(args: argparse.Namespace) -> int:
    from ledger.balances import Account

    if args.peer is not None:
        key = _parse_peer(args.peer)
    else:
        own = _own_key(args)
        if own is None:
            return _fail(args, "no PEER given and this peer has no identity key yet")
        key = own

    def body(store) -> int:  # type: ignore[no-untyped-def]
        row = _account_row(key, store.balances().get(key, Account()))
        if args.json:
            options.emit_json({"network_id": store.network_id, "unit": "credits", **row})
        else:
            print(f"{row['peer_id']}")
            for name in ("earned", "spent", "balance", "unpaid", "forfeited"):
                print(f"{name:>10}: {row[name]:.3f} credits")
        return 0

    return _with_store(args, body)


def _short(text: str, n: int = 12) -> str:
    return text if len(text) <= n + 3 else text[:n] + "..."


def run_receipts(args: argparse.Namespace) -> int:
    from ledger.units import credits

    peer = _parse_peer(args.peer) if args.peer else None
    if args.limit is not None and args.limit < 0:
        from plexus.errors import ConfigError

        raise ConfigError("--limit must be at least 0")

    def body(store) -> int:  # type: ignore[no-untyped-def]
        rows = []
        for signed in store.iter_receipts():
            r = signed.receipt
            if peer is not None and peer not in (r.server_key, r.client_key):
                continue
            rows.append(
                {
                    "id": signed.receipt_id.hex(),
                    "server": _key_name(r.server_key),
                    "client": _key_name(r.client_key),
                    "model_id": r.model_id,
                    "block_start": r.block_start,
                    "block_end": r.block_end,
                    "session_id": r.session_id.hex(),
                    "seq": r.seq,
                    "prompt_tokens": r.prompt_tokens,
                    "generated_tokens": r.generated_tokens,
                    "amount": credits(r.amount),
                    "epoch": r.epoch,
                }
            )
        rows.sort(key=lambda row: (-row["epoch"], row["id"]))
        if args.limit is not None:
            rows = rows[: args.limit]
        if args.json:
            options.emit_json({"network_id": store.network_id, "unit": "credits", "receipts": rows})
            return 0
        print(
            f"{'server':<16} {'client':<16} {'model':<16} {'blocks':>7} {'session':<13} "
            f"{'seq':>4} {'tokens':>7} {'credits':>12}"
        )
        for row in rows:
            blocks = f"{row['block_start']}-{row['block_end']}"
            tokens = row["prompt_tokens"] + row["generated_tokens"]
            print(
                f"{_short(row['server']):<16} {_short(row['client']):<16} "
                f"{_short(row['model_id']):<16} {blocks:>7} {_short(row['session_id'], 10):<13} "
                f"{row['seq']:>4} {tokens:>7} {row['amount']:>12.3f}"
            )
        print(f"{len(rows)} receipt(s)")
        return 0

    return _with_store(args, body)


def run_reputation(args: argparse.Namespace) -> int:
    own = None if args.all_auditors else _own_key(args)
    trusted = [own] if own is not None else None

    def body(store) -> int:  # type: ignore[no-untyped-def]
        book = store.reputation_book(trusted_auditors=trusted)
        rows = []
        for key in book.servers():
            rep = book.reputation(key)
            rows.append(
                {
                    "key": key.hex(),
                    "peer_id": _key_name(key),
                    "score": round(rep.score, 6),
                    "passes": rep.passes,
                    "fails": rep.fails,
                    "consecutive_valid": rep.consecutive_valid,
                    "banned": rep.banned,
                }
            )
        rows.sort(key=lambda row: (-row["score"], row["key"]))
        auditors = "every auditor" if trusted is None else "this peer's own audits"
        if args.json:
            options.emit_json(
                {"network_id": store.network_id, "counted": auditors, "servers": rows}
            )
            return 0
        print(f"reputation from {auditors}")
        print(f"{'server':<54} {'score':>7} {'passes':>7} {'fails':>6}  status")
        for row in rows:
            status = "BANNED (fraud proof)" if row["banned"] else ""
            print(
                f"{row['peer_id']:<54} {row['score']:>7.3f} {row['passes']:>7} "
                f"{row['fails']:>6}  {status}"
            )
        return 0

    return _with_store(args, body)
