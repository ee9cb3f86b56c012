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
