"""Fixtures for the ledger: keys, receipt factories, and real databases.

`store_url` runs a test once against a SQLite file and once against a real PostgreSQL server
started for the session from the distribution's binaries (Debian: `apt-get install
postgresql`; elsewhere put `pg_ctl` on PATH or set PLEXUS_TEST_PG_BIN). The PostgreSQL runs
are skipped, with the reason, only where no server binaries or no psycopg driver exist.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import nacl.signing
import pytest

from tests.ledger.helpers import key


@pytest.fixture(scope="session")
def keys() -> list[nacl.signing.SigningKey]:
    return [key(i) for i in range(1, 9)]


# -- PostgreSQL ---------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    explicit = os.environ.get("PLEXUS_TEST_PG_BIN")
    if explicit:
        return Path(explicit)
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(found[0]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Postgres:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="plexus-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            runuser = shutil.which("runuser")
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                pw = None
            if runuser is None or pw is None:
                shutil.rmtree(self.root)
                raise RuntimeError("running as root and no 'postgres' user or runuser")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.prefix = [runuser, "-u", "postgres", "--"]

    def run(self, *cmd: str) -> None:
        subprocess.run([*self.prefix, *cmd], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                 "--no-sync", "-E", "UTF8")  # fmt: skip
        server_options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", server_options,
                 "-l", str(self.root / "log"), "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        try:
            self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[_Postgres]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need psycopg: pip install 'psycopg[binary]'")
    bin_dir = _pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip(
            "PostgreSQL server binaries not found (apt-get install postgresql, put pg_ctl "
            "on PATH, or set PLEXUS_TEST_PG_BIN)"
        )
    try:
        server = _Postgres(bin_dir)
    except RuntimeError as exc:
        pytest.skip(f"cannot run a PostgreSQL server here: {exc}")
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        log = server.root / "log"
        detail = log.read_text() if log.exists() else exc.stderr.decode(errors="replace")
        shutil.rmtree(server.root, ignore_errors=True)
        pytest.fail(f"PostgreSQL was found but did not start: {detail[-2000:]}")
    yield server
    server.stop()


_databases = itertools.count()


def _create_database(server: _Postgres) -> str:
    import psycopg

    name = f"ledger_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)


@pytest.fixture
def pg_url(postgres: _Postgres) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return _create_database(postgres)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def url_factory(
    request: pytest.FixtureRequest, tmp_path: Path, store_url: str
) -> Callable[[], str]:
    """More empty databases of the same kind as `store_url`."""
    counter = itertools.count(1)

    def make() -> str:
        if store_url.startswith("sqlite"):
            return f"sqlite:///{tmp_path / f'ledger{next(counter)}.sqlite'}"
        return _create_database(request.getfixturevalue("postgres"))

    return make
