"""`plexus ledger verify|balances|balance|receipts|reputation`, and the rule that `ledger`
never imports `plexus`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from ledger import schema
from ledger.audits import Audit, Outcome, sign_audit
from ledger.fraud import sign_commitment, sign_fraud_proof
from ledger.store import LedgerStore
from plexus.cli import main as plexus_main
from plexus.identity import Identity, peer_id_of
from tests.ledger.helpers import MODEL, NETWORK, issue_receipt, key, pub, session
from tests.ledger.test_fraud_audits import INPUTS, commitments_differ, make_proof

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


# -- balance, receipts, reputation: a real ledger, the real command in a subprocess -------

SRV_A, SRV_B, CLIENT_2, CHEAT, OUTSIDER, NOBODY = (key(n) for n in range(61, 67))


def plexus(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plexus", "ledger", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plexus_json(*argv: str) -> dict:  # type: ignore[type-arg]
    done = plexus(*argv, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def audit(server, auditor, outcome: Outcome, epoch: int):  # type: ignore[no-untyped-def]
    body = Audit(NETWORK, MODEL, 0, 3, session(epoch), INPUTS, outcome, epoch, pub(server),
                 pub(auditor))  # fmt: skip
    return sign_audit(body, auditor)


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Identity]:
    """A data dir with this peer's identity and a ledger where this peer (OWN) was served by
    SRV_A (two receipts of one session) and SRV_B, CLIENT_2 by SRV_A and by CHEAT, whom a
    fraud proof convicts; OWN audited SRV_A twice (pass) and SRV_B once (fail), OUTSIDER
    passed SRV_B three times."""
    data = tmp_path_factory.mktemp("ledger-cli")
    me = Identity.load_or_create(data / "identity.key")
    own = me.signing_key
    with LedgerStore(f"sqlite:///{data / 'ledger.sqlite'}", NETWORK) as store:
        result = store.add_receipts(
            [
                issue_receipt(SRV_A, own, session_id=session(1), seq=1, amount=1500,
                              epoch=1000, span=(0, 3)),
                issue_receipt(SRV_A, own, session_id=session(1), seq=2, amount=3000,
                              epoch=1010, span=(0, 3)),
                issue_receipt(SRV_B, own, session_id=session(2), seq=1, amount=2000,
                              epoch=1020, span=(4, 7)),
                issue_receipt(CHEAT, CLIENT_2, session_id=session(3), seq=1, amount=5000,
                              epoch=1005),
                issue_receipt(SRV_A, CLIENT_2, session_id=session(4), seq=1, amount=700,
                              epoch=1030, span=(0, 3)),
            ]
        )  # fmt: skip
        assert len(result.added) == 5
        proof = make_proof(
            accused=sign_commitment(CHEAT, NETWORK, INPUTS, b"wrong"),
            reporter_key=me.public_key_bytes,
        )
        assert store.add_fraud_proof(sign_fraud_proof(proof, own), commitments_differ)
        for signed in [
            audit(SRV_A, own, Outcome.PASS, 1100),
            audit(SRV_A, own, Outcome.PASS, 1101),
            audit(SRV_B, own, Outcome.FAIL, 1102),
            *(audit(SRV_B, OUTSIDER, Outcome.PASS, 1200 + i) for i in range(3)),
        ]:
            assert store.add_audit(signed)
    return data, me


def test_cli_balance_of_a_peer_of_this_peer_and_of_nobody(ledger_dir) -> None:  # type: ignore[no-untyped-def]
    data, me = ledger_dir
    d = ("--data-dir", str(data))
    a = plexus_json("balance", peer_id_of(pub(SRV_A)), *d)
    assert (a["peer_id"], a["key"]) == (peer_id_of(pub(SRV_A)), pub(SRV_A).hex())
    assert (a["earned"], a["spent"], a["balance"], a["unpaid"]) == (3.7, 0.0, 3.7, 0.0)
    assert a["network_id"] == NETWORK and a["unit"] == "credits" and not a["convicted"]
    b = plexus_json("balance", pub(SRV_B).hex().upper(), *d)  # hex, any case
    assert b["peer_id"] == peer_id_of(pub(SRV_B)) and b["balance"] == 2.0
    own = plexus_json("balance", *d)  # no PEER: this peer's identity.key
    assert own["peer_id"] == me.peer_id_str
    assert (own["earned"], own["spent"], own["balance"]) == (0.0, 5.0, -5.0)
    cheat = plexus_json("balance", pub(CHEAT).hex(), *d)
    assert cheat["convicted"] and (cheat["earned"], cheat["forfeited"]) == (0.0, 5.0)
    assert plexus_json("balance", pub(CLIENT_2).hex(), *d)["spent"] == 0.7  # refunded 5.0
    nobody = plexus_json("balance", peer_id_of(pub(NOBODY)), *d)
    assert nobody["peer_id"] == peer_id_of(pub(NOBODY))
    assert [nobody[k] for k in ("earned", "spent", "balance", "unpaid", "forfeited")] == [0] * 5

    text = plexus("balance", peer_id_of(pub(SRV_A)), *d)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0] == f"peer {peer_id_of(pub(SRV_A))}"
    assert "earned" in text.stdout and "3.700 credits" in text.stdout
    assert "convicted" in plexus("balance", pub(CHEAT).hex(), *d).stdout


def test_cli_balance_refuses_a_malformed_peer_and_a_missing_identity(ledger_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, _ = ledger_dir
    for bad in ("12D3KooWnotapeer", "ab" * 31, "zz" * 32):
        done = plexus("balance", bad, "--data-dir", str(data))
        assert done.returncode == 1 and done.stdout == ""
        assert "PEER must be a peer id" in done.stderr and repr(bad) in done.stderr
    done = plexus("balance", "nope", "--data-dir", str(data), "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["ok"] is False
    url = f"sqlite:///{data / 'ledger.sqlite'}"
    done = plexus("balance", "--ledger-url", url, "--data-dir", str(tmp_path))
    assert done.returncode == 1 and "no identity file" in done.stderr
    assert not (tmp_path / "identity.key").exists()  # never created
    done = plexus("receipts", "--peer", "nope", "--data-dir", str(data))
    assert done.returncode == 1 and "PEER must be a peer id" in done.stderr


def test_cli_receipts_newest_first_filtered_and_limited(ledger_dir) -> None:  # type: ignore[no-untyped-def]
    data, me = ledger_dir
    d = ("--data-dir", str(data))
    listed = plexus_json("receipts", *d)
    assert listed["total"] == 5 and listed["unit"] == "credits"
    rows = listed["receipts"]
    assert [r["epoch"] for r in rows] == [1030, 1020, 1010, 1005, 1000]
    first = rows[0]
    assert first["server_peer_id"] == peer_id_of(pub(SRV_A))
    assert first["server_key"] == pub(SRV_A).hex()
    assert first["client_peer_id"] == peer_id_of(pub(CLIENT_2))
    assert (first["model_id"], first["block_start"], first["block_end"]) == (MODEL, 0, 3)
    assert (first["session_id"], first["seq"]) == (session(4).hex(), 1)
    assert (first["prompt_tokens"], first["generated_tokens"], first["tokens"]) == (10, 1, 11)
    assert (first["amount"], first["amount_millicredits"]) == (0.7, 700)
    assert len(first["id"]) == 64 and first["counts"] is True
    # Only the highest receipt of a stream counts: A's seq 1 for this peer is superseded.
    assert [(r["seq"], r["counts"]) for r in rows if r["session_id"] == session(1).hex()] == [
        (2, True),
        (1, False),
    ]
    mine = plexus_json("receipts", "--peer", me.peer_id_str, *d)
    assert mine["total"] == 3
    assert {r["client_peer_id"] for r in mine["receipts"]} == {me.peer_id_str}
    as_server = plexus_json("receipts", "--peer", pub(SRV_A).hex(), *d)["receipts"]
    assert [r["amount"] for r in as_server] == [0.7, 3.0, 1.5]
    limited = plexus_json("receipts", "--limit", "2", *d)
    assert limited["total"] == 5 and limited["receipts"] == rows[:2]
    assert plexus_json("receipts", "--peer", peer_id_of(pub(NOBODY)), *d) == {
        "network_id": NETWORK,
        "receipts": [],
        "total": 0,
        "unit": "credits",
    }

    text = plexus("receipts", "--limit", "3", *d)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["server", "client", "model", "blocks", "session", "seq",
                                "prompt+gen", "credits"]  # fmt: skip
    assert lines[3].split() == [
        peer_id_of(pub(SRV_A))[-8:], me.peer_id_str[-8:], "meta-llama/Meta-Lla~", "0-3",
        session(1).hex()[:8], "2", "10+2", "3.000",
    ]  # fmt: skip
    assert lines[-1] == "3 of 5 receipts" and len(lines) == 5
    nobody = plexus("receipts", "--peer", peer_id_of(pub(NOBODY)), *d)
    assert nobody.stdout == f"no receipts for {peer_id_of(pub(NOBODY))}\n"


def test_cli_reputation_trusts_this_peer_by_default(ledger_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, me = ledger_dir
    d = ("--data-dir", str(data))
    own = plexus_json("reputation", *d)
    assert own["trusted_auditors"] == [me.peer_id_str]
    servers = {r["peer_id"]: r for r in own["servers"]}
    assert set(servers) == {peer_id_of(pub(k)) for k in (SRV_A, SRV_B, CHEAT)}
    a = servers[peer_id_of(pub(SRV_A))]
    assert (a["passes"], a["fails"], a["consecutive_valid"], a["banned"]) == (2, 0, 2, False)
    assert a["score"] == pytest.approx(0.0975) and a["key"] == pub(SRV_A).hex()
    b = servers[peer_id_of(pub(SRV_B))]  # OUTSIDER's passes do not count
    assert (b["passes"], b["fails"], b["score"], b["banned"]) == (0, 1, 0.0, False)
    assert servers[peer_id_of(pub(CHEAT))]["banned"] is True
    assert own["servers"][0]["peer_id"] == peer_id_of(pub(SRV_A))  # best first

    everyone = plexus_json("reputation", "--all-auditors", *d)
    assert everyone["trusted_auditors"] is None
    b = {r["peer_id"]: r for r in everyone["servers"]}[peer_id_of(pub(SRV_B))]
    assert (b["passes"], b["fails"], b["consecutive_valid"]) == (3, 1, 3)
    assert b["score"] == pytest.approx(1 - 0.95**3)
    url = f"sqlite:///{data / 'ledger.sqlite'}"
    no_identity = plexus_json("reputation", "--ledger-url", url, "--data-dir", str(tmp_path))
    assert no_identity == everyone  # no identity file: every auditor counts
    done = plexus("reputation", "--ledger-url", url, "--identity", str(tmp_path / "none.key"))
    assert done.returncode == 1 and "no identity file" in done.stderr

    text = plexus("reputation", *d)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"auditors: this peer only ({me.peer_id_str})"
    assert lines[2].split() == [peer_id_of(pub(SRV_A)), "0.098", "2", "2", "0", "no"]
    assert any(line.split()[0] == peer_id_of(pub(CHEAT)) and line.endswith("yes")
               for line in lines)  # fmt: skip
