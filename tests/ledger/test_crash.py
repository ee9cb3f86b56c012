"""Kill a writing process at random moments: nothing acknowledged is lost, nothing corrupt."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.store import LedgerStore
from ledger.verify import verify_store
from plexus.cli import main as plexus_main

WRITER = Path(__file__).with_name("crash_writer.py")
KILLS = 22


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_receipts(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    rng = random.Random(20240601)
    acknowledged: set[str] = set()
    killed_while_writing = 0
    for round_ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(WRITER), url, str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        early = b""
        if round_ % 5 == 0:
            # Anywhere from interpreter start-up through opening (and migrating) the ledger.
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            # While writing: after the first acknowledged batch, plus a random delay that
            # lands in signing, checking, inserting or committing a later batch.
            early = child.stdout.readline()
            assert early == b"ready\n", child.stderr.read().decode()  # type: ignore[union-attr]
            early += child.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL, err.decode()
        complete = (early + out).decode().split("\n")[:-1]  # the last piece may be cut
        acks = {line.split()[1] for line in complete if line.startswith("ack ")}
        killed_while_writing += bool(acks)
        acknowledged |= acks

    assert killed_while_writing >= KILLS // 2 and len(acknowledged) > 100
    with LedgerStore(url) as store:
        stored = {rid.hex() for rid in store.receipt_ids()}
        missing = acknowledged - stored
        assert not missing, f"{len(missing)} acknowledged receipts lost"
        report = verify_store(store)
        assert report.ok, report.problems
        assert report.integrity == "ok"
    assert plexus_main(["ledger", "verify", "--ledger-url", url, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] and printed["checked"]["receipts"] == len(stored)
