"""The ledger's store: receipts, fraud proofs and audit reports in SQLite or PostgreSQL.

Guarantees:

* **Acknowledged means durable.** `add_receipts` returns only after the transaction holding
  the batch has committed (SQLite: WAL fsynced, see `ledger.engine`). A process killed at any
  moment loses no acknowledged receipt and leaves no partial batch.
* **Idempotent.** Re-sending a stored receipt (same body) is a no-op reported as duplicate.
* **Order-independent balances.** Receipts are checked against the stored ones of their
  stream (server, client, session): same seq with other content is REPLAYED (kept as
  evidence in `receipt_conflicts`), and a higher seq with a lower amount than a stored lower
  seq is CUMULATIVE_DECREASED. Neither rule can refuse a stream's highest amount, so
  `balances()` is the same whatever order the receipts arrived in.
* Every refusal is counted by kind and reason in the same transaction.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from ledger import migrations, receipts, schema
from ledger.audits import SignedAudit, validate_audit
from ledger.balances import DEFAULT_FREE_LANE, Account, compute_balances
from ledger.engine import make_engine, normalise_url, sqlite_path
from ledger.errors import (
    InvalidAudit,
    InvalidFraudProof,
    InvalidReceipt,
    InvalidRecord,
    Reason,
    StoreError,
)
from ledger.fraud import Checker, SignedFraudProof, verify_fraud_proof
from ledger.receipts import Receipt, SignedReceipt
from ledger.reputation import ReputationBook, ReputationPolicy

_IN_CHUNK = 400
Stream = tuple[bytes, bytes, bytes]


@dataclass(frozen=True)
class Rejected:
    index: int
    """Position in the batch."""
    reason: Reason
    detail: str


@dataclass
class BatchResult:
    added: list[bytes] = field(default_factory=list)
    """Ids of receipts stored by this call."""
    duplicates: list[bytes] = field(default_factory=list)
    """Ids of receipts that were already stored (idempotent no-op)."""
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def acknowledged(self) -> list[bytes]:
        """Every id now durably stored: added and duplicates."""
        return self.added + self.duplicates


Verdict = SignedReceipt | tuple[Reason, str]


def _check_one(data: bytes, network_id: str) -> Verdict:
    try:
        return receipts.parse(data, network_id)
    except InvalidReceipt as exc:
        return exc.reason, exc.detail


def _check_many(datas: Sequence[bytes], network_id: str) -> list[Verdict]:
    return [_check_one(data, network_id) for data in datas]


def _reasons_only(datas: Sequence[bytes], network_id: str) -> list[tuple[Reason, str] | None]:
    """In a worker process: send back only the refusals (the parent re-parses the rest)."""
    return [v if isinstance(v, tuple) else None for v in _check_many(datas, network_id)]


def _receipt_row(signed: SignedReceipt) -> dict[str, Any]:
    r = signed.receipt
    return {
        "id": signed.receipt_id,
        "server_key": r.server_key,
        "client_key": r.client_key,
        "session_id": r.session_id,
        "seq": r.seq,
        "model_id": r.model_id,
        "block_start": r.block_start,
        "block_end": r.block_end,
        "prompt_tokens": r.prompt_tokens,
        "generated_tokens": r.generated_tokens,
        "amount": r.amount,
        "inputs_hash": r.inputs_hash,
        "output_commitment": r.output_commitment,
        "epoch": r.epoch,
        "body": signed.body,
        "server_signature": signed.server_signature,
        "client_signature": signed.client_signature,
    }


def signed_receipt_from_row(row: Any, network_id: str) -> SignedReceipt:
    """Rebuild a receipt from its columns (no parsing); `verify` checks columns == body."""
    receipt = Receipt(
        network_id, row.model_id, row.block_start, row.block_end, row.session_id, row.seq,
        row.prompt_tokens, row.generated_tokens, row.amount, row.inputs_hash,
        row.output_commitment, row.epoch, row.server_key, row.client_key,
    )  # fmt: skip
    return SignedReceipt(receipt, row.server_signature, row.client_signature, row.body)


class LedgerStore:
    """One ledger database, bound to one network id (recorded on creation)."""

    def __init__(
        self,
        url: str,
        network_id: str | None = None,
        *,
        create: bool = True,
        verify_workers: int = 1,
    ) -> None:
        """Open (and with `create`, create or migrate) the ledger at `url`.

        `network_id` must match the one the ledger was created with; it may be omitted to
        open an existing ledger. `verify_workers` > 1 checks the signatures of large batches
        in that many processes.
        """
        self.url = normalise_url(url)
        path = sqlite_path(self.url)
        if path is not None:
            if not create and not path.exists():
                raise StoreError(f"no ledger at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = make_engine(self.url)
        if create:
            migrations.migrate(self.engine)
        self.network_id = self._bind_network(network_id, create)
        self._workers = max(1, verify_workers)
        self._pool: Executor | None = None

    def _bind_network(self, network_id: str | None, create: bool) -> str:
        with self.engine.begin() as conn:
            version = migrations.current_version(conn)
            if version != schema.SCHEMA_VERSION:
                raise StoreError(
                    f"ledger schema is at version {version}, this code needs "
                    f"{schema.SCHEMA_VERSION}" + ("" if create else " (open it with create)")
                )
            meta = schema.ledger_meta
            stored = conn.execute(
                select(meta.c.value).where(meta.c.key == "network_id")
            ).scalar_one_or_none()
            if stored is None:
                if network_id is None:
                    raise StoreError("a new ledger needs a network id")
                conn.execute(insert(meta).values(key="network_id", value=network_id))
                return network_id
            if network_id is not None and network_id != stored:
                raise StoreError(f"ledger belongs to network {stored!r}, not {network_id!r}")
            return stored

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.engine.dispose()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- receipts -------------------------------------------------------------------------

    def add_receipt(self, item: bytes | SignedReceipt) -> bool:
        """Store one receipt durably. True if new, False if already stored; raises
        `InvalidReceipt` (after counting the refusal) if it is refused."""
        result = self.add_receipts([item])
        if result.rejected:
            rejected = result.rejected[0]
            raise InvalidReceipt(rejected.reason, rejected.detail)
        return bool(result.added)

    def add_receipts(self, items: Iterable[bytes | SignedReceipt]) -> BatchResult:
        """Check and store a batch in one transaction; returns after it is durable.

        Items are encoded signed receipts (or `SignedReceipt`s, which are re-encoded and
        re-parsed, so nothing unchecked is stored). Refused items are reported, not raised.
        """
        datas = [i.encode() if isinstance(i, SignedReceipt) else bytes(i) for i in items]
        verdicts = self._verify(datas)
        result = BatchResult()
        refused: Counter[Reason] = Counter()
        valid: list[tuple[int, SignedReceipt]] = []
        for index, verdict in enumerate(verdicts):
            if isinstance(verdict, SignedReceipt):
                valid.append((index, verdict))
            else:
                result.rejected.append(Rejected(index, *verdict))
                refused[verdict[0]] += 1
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("LOCK TABLE receipts IN SHARE ROW EXCLUSIVE MODE"))
            self._insert_checked(conn, valid, result, refused)
            self._count_rejections(conn, "receipt", refused)
        result.rejected.sort(key=lambda r: r.index)
        return result

    def _verify(self, datas: list[bytes]) -> list[Verdict]:
        """Parse and check signatures; with `verify_workers` = n > 1, large batches are
        shared between this process and n - 1 worker processes (signature checks dominate
        the cost of storing a receipt)."""
        if self._workers == 1 or len(datas) < 256:
            return _check_many(datas, self.network_id)
        if self._pool is None:
            # Spawned, not forked: a forked child would inherit open SQLite connections,
            # and SQLite must never see a connection cross a fork.
            spawn = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self._workers - 1, mp_context=spawn)
        # This process also parses the pool's valid receipts afterwards: give it a bit less.
        own = len(datas) * 2 // (2 * self._workers + 1)
        rest = datas[own:]
        size = -(-len(rest) // (self._workers - 1))
        futures = [
            self._pool.submit(_reasons_only, rest[i : i + size], self.network_id)
            for i in range(0, len(rest), size)
        ]
        verdicts = _check_many(datas[:own], self.network_id)
        reasons = [v for future in futures for v in future.result()]
        verdicts.extend(
            SignedReceipt.decode(data) if reason is None else reason
            for data, reason in zip(rest, reasons, strict=True)
        )
        return verdicts

    def _insert_checked(
        self,
        conn: Connection,
        valid: list[tuple[int, SignedReceipt]],
        result: BatchResult,
        refused: Counter[Reason],
    ) -> None:
        if not valid:
            return
        state = self._load_streams(conn, {s.receipt.session_id for _, s in valid})
        known_conflicts = self._conflict_ids(conn, [s.receipt_id for _, s in valid])
        new_rows: list[dict[str, Any]] = []
        conflict_rows: list[dict[str, Any]] = []
        for index, signed in valid:
            r, rid = signed.receipt, signed.receipt_id
            seqs = state.setdefault(r.stream, {})
            stored = seqs.get(r.seq)
            if stored is not None and stored[0] == rid:
                result.duplicates.append(rid)
                continue
            if stored is not None:
                if rid not in known_conflicts:
                    known_conflicts.add(rid)
                    conflict_rows.append({**_receipt_row(signed), "conflicts_with": stored[0]})
                result.rejected.append(
                    Rejected(index, Reason.REPLAYED, f"seq {r.seq} is stored with other content")
                )
                refused[Reason.REPLAYED] += 1
                continue
            higher = [seq for seq, (_, amount) in seqs.items() if seq < r.seq and amount > r.amount]
            if higher:
                result.rejected.append(
                    Rejected(
                        index,
                        Reason.CUMULATIVE_DECREASED,
                        f"amount {r.amount} at seq {r.seq} is below seq {max(higher)}'s",
                    )
                )
                refused[Reason.CUMULATIVE_DECREASED] += 1
                continue
            seqs[r.seq] = (rid, r.amount)
            new_rows.append(_receipt_row(signed))
            result.added.append(rid)
        if new_rows:
            conn.execute(insert(schema.receipts), new_rows)
        if conflict_rows:
            conn.execute(insert(schema.receipt_conflicts), conflict_rows)

    def _load_streams(
        self, conn: Connection, sessions: set[bytes]
    ) -> dict[Stream, dict[int, tuple[bytes, int]]]:
        t = schema.receipts
        state: dict[Stream, dict[int, tuple[bytes, int]]] = {}
        ordered = sorted(sessions)
        for i in range(0, len(ordered), _IN_CHUNK):
            rows = conn.execute(
                select(
                    t.c.id, t.c.server_key, t.c.client_key, t.c.session_id, t.c.seq, t.c.amount
                ).where(t.c.session_id.in_(ordered[i : i + _IN_CHUNK]))
            )
            for row in rows:
                stream = (row.server_key, row.client_key, row.session_id)
                state.setdefault(stream, {})[row.seq] = (row.id, row.amount)
        return state

    def _conflict_ids(self, conn: Connection, ids: list[bytes]) -> set[bytes]:
        t = schema.receipt_conflicts
        found: set[bytes] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            found.update(conn.scalars(select(t.c.id).where(t.c.id.in_(ids[i : i + _IN_CHUNK]))))
        return found

    def has_receipt(self, receipt_id: bytes) -> bool:
        t = schema.receipts
        with self.engine.begin() as conn:
            return conn.execute(select(t.c.id).where(t.c.id == receipt_id)).first() is not None

    def receipt_ids(self) -> set[bytes]:
        with self.engine.begin() as conn:
            return set(conn.scalars(select(schema.receipts.c.id)))

    def iter_receipts(self, *, conflicts: bool = False) -> Iterator[SignedReceipt]:
        """Stored receipts (or, with `conflicts`, the REPLAYED evidence), from their columns."""
        table = schema.receipt_conflicts if conflicts else schema.receipts
        with self.engine.begin() as conn:
            query = select(table).order_by(table.c.id).execution_options(yield_per=2000)
            for row in conn.execute(query):
                yield signed_receipt_from_row(row, self.network_id)

    # -- fraud proofs and audits ---------------------------------------------------------

    def add_fraud_proof(self, item: bytes | SignedFraudProof, checker: Checker) -> bool:
        """Verify (signatures, structure, then `checker`) and store; True if new."""
        data = item.encode() if isinstance(item, SignedFraudProof) else bytes(item)
        try:
            signed = SignedFraudProof.decode(data)
            verify_fraud_proof(signed, self.network_id, checker)
        except InvalidFraudProof as exc:
            self._refuse("fraud_proof", exc)
            raise
        p = signed.proof
        row = {
            "id": signed.proof_id, "accused_key": p.accused_key, "reporter_key": p.reporter_key,
            "epoch": p.epoch, "body": signed.body, "signature": signed.signature,
        }  # fmt: skip
        return self._insert_ignore(schema.fraud_proofs, row)

    def add_audit(self, item: bytes | SignedAudit) -> bool:
        """Verify the auditor's signature and store; True if new."""
        data = item.encode() if isinstance(item, SignedAudit) else bytes(item)
        try:
            signed = SignedAudit.decode(data)
            validate_audit(signed, self.network_id)
        except InvalidAudit as exc:
            self._refuse("audit", exc)
            raise
        a = signed.audit
        row = {
            "id": signed.audit_id, "server_key": a.server_key, "auditor_key": a.auditor_key,
            "model_id": a.model_id, "outcome": int(a.outcome), "epoch": a.epoch,
            "body": signed.body, "signature": signed.signature,
        }  # fmt: skip
        return self._insert_ignore(schema.audits, row)

    def fraud_proofs(self) -> list[SignedFraudProof]:
        t = schema.fraud_proofs
        with self.engine.begin() as conn:
            rows = conn.execute(select(t.c.body, t.c.signature).order_by(t.c.id)).all()
        return [SignedFraudProof.decode(row.body + row.signature) for row in rows]

    def audits(self) -> list[SignedAudit]:
        t = schema.audits
        with self.engine.begin() as conn:
            rows = conn.execute(select(t.c.body, t.c.signature).order_by(t.c.id)).all()
        return [SignedAudit.decode(row.body + row.signature) for row in rows]

    def _insert_ignore(self, table: Table, row: dict[str, Any]) -> bool:
        with self.engine.begin() as conn:
            dialect_insert = (
                postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            )
            statement = dialect_insert(table).values(**row).on_conflict_do_nothing()
            return conn.execute(statement.returning(table.c.id)).first() is not None

    # -- rejection counters --------------------------------------------------------------

    def _refuse(self, kind: str, exc: InvalidRecord) -> None:
        with self.engine.begin() as conn:
            self._count_rejections(conn, kind, Counter({exc.reason: 1}))

    @staticmethod
    def _count_rejections(conn: Connection, kind: str, counts: Counter[Reason]) -> None:
        t = schema.rejections
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        for reason, n in sorted(counts.items()):
            statement = dialect_insert(t).values(kind=kind, reason=reason.value, count=n)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[t.c.kind, t.c.reason],
                    set_={"count": t.c.count + statement.excluded.count},
                )
            )

    def rejection_counts(self) -> dict[str, dict[str, int]]:
        """{kind: {reason: count}} of every refusal ever counted (zeros omitted)."""
        t = schema.rejections
        counts: dict[str, dict[str, int]] = {}
        with self.engine.begin() as conn:
            for row in conn.execute(select(t).where(t.c.count > 0)):
                counts.setdefault(row.kind, {})[row.reason] = row.count
        return counts

    # -- derived views --------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.engine.begin() as conn:
            return {
                name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in (
                    ("receipts", schema.receipts),
                    ("receipt_conflicts", schema.receipt_conflicts),
                    ("fraud_proofs", schema.fraud_proofs),
                    ("audits", schema.audits),
                )
            }

    def balances(
        self,
        *,
        free_lane: int | None = DEFAULT_FREE_LANE,
        scale: Callable[[str], int] | None = None,
    ) -> dict[bytes, Account]:
        """`balances.compute_balances` over everything stored (conflict evidence included)."""
        everything = [*self.iter_receipts(), *self.iter_receipts(conflicts=True)]
        return compute_balances(everything, self.fraud_proofs(), free_lane=free_lane, scale=scale)

    def reputation_book(
        self,
        *,
        trusted_auditors: Iterable[bytes] | None = None,
        policy: ReputationPolicy | None = None,
    ) -> ReputationBook:
        return ReputationBook(
            self.audits(), self.fraud_proofs(), trusted_auditors=trusted_auditors, policy=policy
        )
