"""Re-verify a whole ledger from its database: the audit behind `plexus ledger verify`.

Checks the database engine's own integrity (SQLite `PRAGMA integrity_check` and
`foreign_key_check`), the schema version, and every stored object: its signed bytes parse
strictly, belong to this ledger's network, hash to its id, match the query columns, and carry
valid signatures. Fraud proofs are re-checked for structure and signatures only (the
verification layer's checker is not available here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text

from ledger import migrations, receipts, schema
from ledger.audits import SignedAudit, validate_audit
from ledger.errors import InvalidRecord
from ledger.fraud import SignedFraudProof, check_structure
from ledger.receipts import SignedReceipt
from ledger.store import LedgerStore, signed_receipt_from_row

MAX_PROBLEMS_LISTED = 100


@dataclass
class VerifyReport:
    network_id: str
    dialect: str
    schema_version: int = 0
    integrity: str = "not run"
    checked: dict[str, int] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    rejections: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(self.bad.values())

    def problem(self, kind: str, message: str) -> None:
        self.bad[kind] = self.bad.get(kind, 0) + 1
        if len(self.problems) < MAX_PROBLEMS_LISTED:
            self.problems.append(f"{kind}: {message}")

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "network_id": self.network_id,
            "database": self.dialect,
            "schema_version": self.schema_version,
            "integrity": self.integrity,
            "checked": self.checked,
            "bad": self.bad,
            "problems": self.problems,
            "rejections": self.rejections,
        }


def _check_receipt_row(row: Any, network_id: str) -> str | None:
    try:
        parsed = SignedReceipt.decode(row.body + row.server_signature + row.client_signature)
        receipts.validate(parsed, network_id)
    except InvalidRecord as exc:
        return str(exc)
    if parsed.receipt_id != row.id:
        return "id is not the hash of the body"
    if signed_receipt_from_row(row, network_id).receipt != parsed.receipt:
        return "columns differ from the signed body"
    return None


def verify_store(store: LedgerStore) -> VerifyReport:
    report = VerifyReport(store.network_id, store.dialect)
    with store.engine.begin() as conn:
        report.schema_version = migrations.current_version(conn)
        if report.schema_version != schema.SCHEMA_VERSION:
            report.problem("schema", f"version {report.schema_version}")
        if store.dialect == "sqlite":
            result = [r[0] for r in conn.execute(text("PRAGMA integrity_check"))]
            report.integrity = "ok" if result == ["ok"] else "; ".join(map(str, result))
            if report.integrity != "ok":
                report.problem("database", f"integrity_check: {report.integrity}")
            orphans = conn.execute(text("PRAGMA foreign_key_check")).all()
            if orphans:
                report.problem("database", f"{len(orphans)} foreign key violations")
        else:
            report.integrity = "not available on " + store.dialect

    for kind, table in (
        ("receipts", schema.receipts),
        ("receipt_conflicts", schema.receipt_conflicts),
    ):
        report.checked[kind] = 0
        with store.engine.begin() as conn:
            for row in conn.execute(select(table).execution_options(yield_per=2000)):
                report.checked[kind] += 1
                error = _check_receipt_row(row, store.network_id)
                if error:
                    report.problem(kind, f"{row.id.hex()}: {error}")

    report.checked["fraud_proofs"] = 0
    with store.engine.begin() as conn:
        for row in conn.execute(select(schema.fraud_proofs)):
            report.checked["fraud_proofs"] += 1
            try:
                proof = SignedFraudProof.decode(row.body + row.signature)
                check_structure(proof, store.network_id)
            except InvalidRecord as exc:
                report.problem("fraud_proofs", f"{row.id.hex()}: {exc}")
                continue
            if proof.proof_id != row.id or proof.proof.accused_key != row.accused_key:
                report.problem("fraud_proofs", f"{row.id.hex()}: columns differ from the body")

    report.checked["audits"] = 0
    with store.engine.begin() as conn:
        for row in conn.execute(select(schema.audits)):
            report.checked["audits"] += 1
            try:
                audit = SignedAudit.decode(row.body + row.signature)
                validate_audit(audit, store.network_id)
            except InvalidRecord as exc:
                report.problem("audits", f"{row.id.hex()}: {exc}")
                continue
            if audit.audit_id != row.id or audit.audit.server_key != row.server_key:
                report.problem("audits", f"{row.id.hex()}: columns differ from the body")

    report.rejections = store.rejection_counts()
    return report
