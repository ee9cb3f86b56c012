"""`plexus ledger`: check a ledger database and show the balances it implies."""

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
        help="verify the ledger of receipts and show balances",
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


def _add_ledger_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ledger-url",
        default=None,
        metavar="URL",
        help="SQLAlchemy database URL, e.g. postgresql://user@host/db "
        f"(default: sqlite under --data-dir, <data-dir>/{LEDGER_FILE_NAME})",
    )
    options.add_common(parser, network=False, reporting=True)


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
