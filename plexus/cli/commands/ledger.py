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
    _add_free_lane_option(balances)
    balances.set_defaults(func=run_balances)

    balance = actions.add_parser(
        "balance",
        help="print one peer's account (default: this peer's own)",
        description="One peer's account in credits: earned serving, spent being served, "
        "balance (earned - spent), unpaid (charges its clients could not cover) and "
        "forfeited (charges voided by a fraud proof against it). A peer with no receipts "
        "has a zero account.",
    )
    balance.add_argument(
        "peer",
        nargs="?",
        default=None,
        metavar="PEER",
        help="a peer id (12D3KooW...) or a 64-hex-digit Ed25519 public key (default: this "
        "peer's own, from --identity or DATA_DIR/identity.key)",
    )
    _add_identity_option(balance)
    _add_free_lane_option(balance)
    _add_ledger_options(balance)
    balance.set_defaults(func=run_balance)

    receipts = actions.add_parser(
        "receipts",
        help="list the stored receipts, newest first",
        description="The stored receipts (both signatures checked when they were stored), "
        "newest first: by epoch, then seq, descending, then by receipt id. One line each: "
        "server and client (last 8 characters of their peer ids), model, blocks, session "
        "(first 8 hex digits), seq, prompt+generated tokens (cumulative for the session) and "
        "amount in credits (cumulative too: only the highest receipt of a stream counts).",
    )
    receipts.add_argument(
        "--peer",
        default=None,
        metavar="PEER",
        help="only receipts where PEER (peer id or 64-hex public key) is the server or the client",
    )
    receipts.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help="print at most the N newest receipts (default: all)",
    )
    _add_ledger_options(receipts)
    receipts.set_defaults(func=run_receipts)

    reputation = actions.add_parser(
        "reputation",
        help="print every audited server's reputation",
        description="Each server's reputation from the stored audit reports and fraud proofs "
        "(docs/ledger.md, Reputation): score in [0, 1], clean audits in a row, passes, fails, "
        "and whether a fraud proof bans it. Which auditors count: by default only this peer "
        "(the audits it made itself as a client, as the client does when it plans routes) "
        "if its identity file exists, otherwise every auditor; --all-auditors counts every "
        "stored audit. Servers audited only by untrusted auditors are not listed.",
    )
    reputation.add_argument(
        "--all-auditors",
        action="store_true",
        help="count every stored audit, not only this peer's own",
    )
    _add_identity_option(reputation)
    _add_ledger_options(reputation)
    reputation.set_defaults(func=run_reputation)


def _add_free_lane_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--free-lane",
        type=float,
        default=None,
        metavar="CREDITS",
        help="how far a client may run into debt (default: the ledger's, 100000; "
        "negative: no limit)",
    )


def _add_identity_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--identity",
        type=Path,
        default=None,
        metavar="FILE",
        help="this peer's key file (default DATA_DIR/identity.key); it is only read, never created",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"wants a whole number >= 1, not {text!r}")
    return value


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
    from ledger.units import credits

    free_lane = _free_lane(args)

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


def _free_lane(args: argparse.Namespace) -> int | None:
    from ledger.balances import DEFAULT_FREE_LANE
    from ledger.units import MILLI

    if args.free_lane is None:
        return DEFAULT_FREE_LANE
    return None if args.free_lane < 0 else round(args.free_lane * MILLI)


def _parse_peer(text: str) -> bytes:
    """A peer id (12D3KooW...) or 64 hex digits as a raw 32-byte public key; ValueError."""
    from plexus.identity import public_key_of

    cleaned = text.strip()
    if len(cleaned) == 64:
        try:
            return bytes.fromhex(cleaned)
        except ValueError:
            pass
    try:
        return public_key_of(cleaned)
    except ValueError:
        raise ValueError(
            f"PEER must be a peer id (12D3KooW...) or a 64-hex-digit public key, not {text!r}"
        ) from None


def _own_key(args: argparse.Namespace, *, required: bool) -> bytes | None:
    """This peer's public key from --identity or DATA_DIR/identity.key, never creating the
    file: None when it does not exist and is not `required`; ValueError when it is."""
    from plexus.errors import ConfigError
    from plexus.identity import IDENTITY_FILE_NAME, Identity

    explicit = args.identity is not None
    path = Path(args.identity).expanduser() if explicit else None
    if path is None:
        path = options.data_dir(args) / IDENTITY_FILE_NAME
    if not path.exists():
        if required or explicit:
            raise ValueError(
                f"no identity file at {path} (give a PEER, or this peer's key with --identity)"
                if required
                else f"no identity file at {path}"
            )
        return None
    try:
        return Identity.load_or_create(path).public_key_bytes
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _short_peer(key: bytes) -> str:
    name = _key_name(key)
    return name[-8:] if name.startswith("12D3KooW") else name[:8]


def _short_model(model_id: str) -> str:
    return model_id if len(model_id) <= 20 else model_id[:19] + "~"


def run_balance(args: argparse.Namespace) -> int:
    from ledger.balances import Account, convicted_keys
    from ledger.units import credits

    try:
        key = _parse_peer(args.peer) if args.peer is not None else _own_key(args, required=True)
    except ValueError as exc:
        return _fail(args, str(exc))
    assert key is not None
    free_lane = _free_lane(args)

    def body(store) -> int:  # type: ignore[no-untyped-def]
        account = store.balances(free_lane=free_lane).get(key, Account())
        row = {
            "network_id": store.network_id,
            "unit": "credits",
            "key": key.hex(),
            "peer_id": _key_name(key),
            "earned": credits(account.earned),
            "spent": credits(account.spent),
            "balance": credits(account.balance),
            "unpaid": credits(account.unpaid),
            "forfeited": credits(account.forfeited),
            "convicted": key in convicted_keys(store.fraud_proofs()),
        }
        if args.json:
            options.emit_json(row)
            return 0
        print(f"peer {row['peer_id']}")
        print(f"key  {row['key']}")
        for name in ("earned", "spent", "balance", "unpaid", "forfeited"):
            print(f"  {name:<10} {row[name]:>14.3f} credits")
        if row["convicted"]:
            print("  convicted of fraud: everything it earned is forfeited")
        return 0

    return _with_store(args, body)


def run_receipts(args: argparse.Namespace) -> int:
    from ledger.balances import latest_per_stream
    from ledger.units import credits

    try:
        peer = None if args.peer is None else _parse_peer(args.peer)
    except ValueError as exc:
        return _fail(args, str(exc))

    def body(store) -> int:  # type: ignore[no-untyped-def]
        stored = list(store.iter_receipts())
        conflicts = list(store.iter_receipts(conflicts=True))
        counting = {rid for _, rid in latest_per_stream([*stored, *conflicts]).values()}
        if peer is not None:
            stored = [s for s in stored if peer in (s.receipt.server_key, s.receipt.client_key)]
        stored.sort(key=lambda s: (-s.receipt.epoch, -s.receipt.seq, s.receipt_id))
        total = len(stored)
        shown = stored if args.limit is None else stored[: args.limit]
        if args.json:
            options.emit_json(
                {
                    "network_id": store.network_id,
                    "unit": "credits",
                    "total": total,
                    "receipts": [_receipt_json(s, s.receipt_id in counting) for s in shown],
                }
            )
            return 0
        if not shown:
            print("no receipts" + ("" if peer is None else f" for {_key_name(peer)}"))
            return 0
        print(f"{'server':<8} {'client':<8} {'model':<20} {'blocks':>7} {'session':<8} "
              f"{'seq':>6} {'prompt+gen':>15} {'credits':>14}")  # fmt: skip
        for s in shown:
            r = s.receipt
            tokens = f"{r.prompt_tokens}+{r.generated_tokens}"
            print(
                f"{_short_peer(r.server_key):<8} {_short_peer(r.client_key):<8} "
                f"{_short_model(r.model_id):<20} {f'{r.block_start}-{r.block_end}':>7} "
                f"{r.session_id.hex()[:8]:<8} {r.seq:>6} {tokens:>15} "
                f"{credits(r.amount):>14.3f}"
            )
        print(f"{len(shown)} of {total} receipts" if len(shown) < total else f"{total} receipts")
        return 0

    return _with_store(args, body)


def _receipt_json(signed, counts: bool) -> dict:  # type: ignore[no-untyped-def]
    from ledger.units import credits

    r = signed.receipt
    return {
        "id": signed.receipt_id.hex(),
        "server_key": r.server_key.hex(),
        "server_peer_id": _key_name(r.server_key),
        "client_key": r.client_key.hex(),
        "client_peer_id": _key_name(r.client_key),
        "model_id": r.model_id,
        "block_start": r.block_start,
        "block_end": r.block_end,
        "session_id": r.session_id.hex(),
        "seq": r.seq,
        "prompt_tokens": r.prompt_tokens,
        "generated_tokens": r.generated_tokens,
        "tokens": r.tokens,
        "amount": credits(r.amount),
        "amount_millicredits": r.amount,
        "epoch": r.epoch,
        "inputs_hash": r.inputs_hash.hex(),
        "output_commitment": r.output_commitment.hex(),
        "counts": counts,
    }


def run_reputation(args: argparse.Namespace) -> int:
    own: bytes | None = None
    if not args.all_auditors:
        try:
            own = _own_key(args, required=False)
        except ValueError as exc:
            return _fail(args, str(exc))
    trusted = None if own is None else [own]

    def body(store) -> int:  # type: ignore[no-untyped-def]
        book = store.reputation_book(trusted_auditors=trusted)
        rows = []
        for key in book.servers():
            rep = book.reputation(key)
            rows.append(
                {
                    "key": key.hex(),
                    "peer_id": _key_name(key),
                    "score": rep.score,
                    "consecutive_valid": rep.consecutive_valid,
                    "passes": rep.passes,
                    "fails": rep.fails,
                    "banned": rep.banned,
                }
            )
        rows.sort(key=lambda row: (-row["score"], row["key"]))
        auditors = None if own is None else [_key_name(own)]
        if args.json:
            options.emit_json(
                {"network_id": store.network_id, "trusted_auditors": auditors, "servers": rows}
            )
            return 0
        print("auditors: " + ("all" if auditors is None else f"this peer only ({auditors[0]})"))
        if not rows:
            print("no audited servers")
            return 0
        print(f"{'server':<54} {'score':>6} {'in a row':>8} {'passes':>7} {'fails':>6}  banned")
        for row in rows:
            print(
                f"{row['peer_id']:<54} {row['score']:>6.3f} {row['consecutive_valid']:>8} "
                f"{row['passes']:>7} {row['fails']:>6}  {'yes' if row['banned'] else 'no'}"
            )
        return 0

    return _with_store(args, body)
