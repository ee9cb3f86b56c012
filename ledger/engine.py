"""Database engines with the settings the ledger's durability promise relies on.

SQLite (the default): WAL journal, `synchronous=FULL`, foreign keys on, a 30 s busy timeout,
and every transaction opened with `BEGIN IMMEDIATE`. In WAL mode `synchronous=NORMAL` would
already survive a killed process, but it may lose the last commits on a power cut or OS crash;
FULL fsyncs the WAL at every commit, so a receipt acknowledged to its sender survives those
too. The fsync is paid once per *batch* (see `LedgerStore.add_receipts`), which keeps FULL
cheap. BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading
read locks, and a batch's checks and inserts see one consistent state.

PostgreSQL: any `postgresql://` URL (driven by psycopg 3). Commits are durable with the
server's default `synchronous_commit=on`; writers serialise on a table lock (see the store).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ledger.errors import StoreError

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def normalise_url(url: str) -> str:
    """Plain `postgresql://` / `postgres://` URLs use psycopg 3, the driver we install."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for other databases or in-memory SQLite."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc
    if backend == "sqlite":
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            try:
                for pragma in SQLITE_PRAGMAS:
                    cursor.execute(pragma)
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise StoreError(f"unsupported database {backend!r}: use sqlite or postgresql")
