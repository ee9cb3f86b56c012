"""`plexus ledger verify|balances`, and the rule that `ledger` never imports `plexus`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import update

from ledger import schema
from ledger.store import LedgerStore
from plexus.cli import main as plexus_main
from tests.ledger.helpers import NETWORK, issue_receipt, key, pub

LEDGER_DIR = Path(__file__).resolve().parents[2] / "ledger"
SERVER, CLIENT = key(51), key(52)


def test_ledger_never_imports_plexus() -> None:
    for path in sorted(LEDGER_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "plexus" or n.startswith("plexus.") for n in names), path
    code = (
        "import sys, ledger, ledger.store, ledger.verify, ledger.migrations;"
        "bad = [m for m in sys.modules if m == 'plexus' or m.startswith('plexus.')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=LEDGER_DIR.parent)


def test_cli_verify_and_balances(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with LedgerStore(f"sqlite:///{tmp_path / 'ledger.sqlite'}", NETWORK) as store:
        store.add_receipts([issue_receipt(SERVER, CLIENT, seq=s, amount=s * 1500) for s in (1, 2)])
    assert plexus_main(["ledger", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "receipts: 2 checked, 0 bad" in capsys.readouterr().out

    assert plexus_main(["ledger", "balances", "--data-dir", str(tmp_path), "--json"]) == 0
    accounts = {a["key"]: a for a in json.loads(capsys.readouterr().out)["accounts"]}
    assert accounts[pub(SERVER).hex()]["balance"] == 3.0
    assert accounts[pub(CLIENT).hex()]["balance"] == -3.0
    assert accounts[pub(SERVER).hex()]["peer_id"].startswith("12D3KooW")
    assert plexus_main(["ledger", "balances", "--data-dir", str(tmp_path)]) == 0
    assert "3.000" in capsys.readouterr().out

    with LedgerStore(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as store, store.engine.begin() as c:
        c.execute(update(schema.receipts).where(schema.receipts.c.seq == 1).values(amount=7))
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    assert plexus_main(["ledger", "verify", "--ledger-url", url, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and report["bad"] == {"receipts": 1}


def test_cli_reports_a_missing_ledger(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert plexus_main(["ledger", "verify", "--data-dir", str(tmp_path / "none"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    assert not (tmp_path / "none" / "ledger.sqlite").exists()


def _identity_file(tmp_path: Path, signing_key) -> Path:  # type: ignore[no-untyped-def]
    """Write `signing_key` as a libp2p identity file (the format `plexus` keys use)."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.identity_utils import save_identity

    path = tmp_path / "identity.key"
    save_identity(create_new_key_pair(bytes(signing_key)), path)
    return path


def test_cli_balance_receipts_and_reputation(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ledger.audits import Audit, Outcome, sign_audit
    from plexus.identity import Identity, peer_id_of
    from tests.ledger.helpers import MODEL, session

    other_client = key(53)
    with LedgerStore(f"sqlite:///{tmp_path / 'ledger.sqlite'}", NETWORK) as store:
        store.add_receipts(
            [issue_receipt(SERVER, CLIENT, seq=s, amount=s * 1500, epoch=100 + s) for s in (1, 2)]
            + [issue_receipt(SERVER, other_client, session_id=session(9), amount=500, epoch=50)]
        )
        for epoch, outcome in ((1, Outcome.PASS), (2, Outcome.PASS), (3, Outcome.FAIL)):
            verdict = Audit(
                NETWORK, MODEL, 0, 7, session(epoch), bytes(32), outcome, epoch,
                pub(SERVER), pub(CLIENT),
            )  # fmt: skip
            store.add_audit(sign_audit(verdict, CLIENT))
    data = ["--data-dir", str(tmp_path)]
    server_id = peer_id_of(pub(SERVER))

    # balance of a peer given by id, by hex key, and of this peer (its identity file)
    assert plexus_main(["ledger", "balance", server_id, *data, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["earned"], row["spent"], row["balance"]) == (3.5, 0.0, 3.5)
    assert plexus_main(["ledger", "balance", pub(CLIENT).hex(), *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["balance"] == -3.0
    identity = _identity_file(tmp_path, CLIENT)
    assert Identity.load_or_create(identity).public_key_bytes == pub(CLIENT)
    assert plexus_main(["ledger", "balance", *data]) == 0
    text = capsys.readouterr().out
    assert peer_id_of(pub(CLIENT)) in text and "-3.000 credits" in text
    nobody = peer_id_of(pub(key(99)))
    assert plexus_main(["ledger", "balance", nobody, *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["balance"] == 0.0
    assert plexus_main(["ledger", "balance", "not-a-peer", *data]) == 1
    assert "neither a peer id" in capsys.readouterr().err

    # receipts: newest first, filtered by peer, limited
    assert plexus_main(["ledger", "receipts", *data, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["receipts"]
    assert [(r["seq"], r["amount"]) for r in rows] == [(2, 3.0), (1, 1.5), (1, 0.5)]
    assert rows[0]["server"] == server_id and rows[0]["block_end"] == 7
    other = peer_id_of(pub(other_client))
    assert plexus_main(["ledger", "receipts", "--peer", other, *data, "--json"]) == 0
    assert [r["client"] for r in json.loads(capsys.readouterr().out)["receipts"]] == [other]
    assert plexus_main(["ledger", "receipts", "--limit", "1", *data]) == 0
    assert "1 receipt(s)" in capsys.readouterr().out

    # reputation: this peer's verdicts (two passes, then a failure)
    assert plexus_main(["ledger", "reputation", *data, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (rep,) = report["servers"]
    assert (rep["peer_id"], rep["passes"], rep["fails"], rep["banned"]) == (server_id, 2, 1, False)
    assert 0 < rep["score"] < 0.05 and report["counted"] == "this peer's own audits"
    # verdicts of auditors this peer does not trust do not count, unless asked for
    _identity_file(tmp_path, key(77))
    assert plexus_main(["ledger", "reputation", *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["servers"] == []
    assert plexus_main(["ledger", "reputation", "--all-auditors", *data]) == 0
    assert server_id in capsys.readouterr().out
