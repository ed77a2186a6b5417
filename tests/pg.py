"""A throwaway PostgreSQL cluster per test run (per xdist worker), and a database per test.

`initdb -A trust` into a temporary folder owned by the postgres user (as root; otherwise
the current user; bench/pg.py keeps its cluster in a folder of its own across runs),
`pg_ctl start` on a free port of 127.0.0.1 with fsync off, a template
database migrated once, and `CREATE DATABASE … TEMPLATE` for each test (a file copy).
Tests that need it skip with a clear reason only when PostgreSQL's programs are absent
(scripts/install-test-deps.sh installs them; CI runs these tests).

Contract tests run on both engines when their module says `pytestmark =
pytest.mark.both_engines`: every test of it that uses `memory` or `memory_location`
(tests/conftest.py) runs once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import glob
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.memory import Memory

USER = "mirror"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One running PostgreSQL server in a temporary folder."""

    def __init__(self, bin_dir: Path, *, durable: bool = False, keep: Path | None = None) -> None:
        self.bin = bin_dir
        self.durable = durable  # fsync and synchronous commit on (benchmarks), off (tests)
        # `keep`: a folder the cluster lives in across runs (bench/pg.py caches its copies
        # of the prefilled memories there); otherwise a temporary one, removed at `stop`.
        self.kept = keep is not None
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
        self.folder = keep if keep is not None else Path(tempfile.mkdtemp(prefix="mirror-pg-"))
        self.port = _free_port()
        self._serial = 0
        self._serial_lock = threading.Lock()
        self._ahead: queue.Queue[str | BaseException] | None = None
        self._stopping = threading.Event()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres")

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {result.stderr or result.stdout}\n{tail}")

    def start(self) -> None:
        data = self.folder / "data"
        if not (data / "PG_VERSION").exists():
            self._initdb(data)
        elif (data / "postmaster.pid").exists():  # left running by a run that was killed
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
            except RuntimeError:  # not running after all (a stale pid file): start says so
                pass
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        options += " -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.folder / "log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def _initdb(self, data: Path) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-A",
            "trust",
            "-U",
            USER,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "-D",
            str(data),
        )

    def stop(self) -> None:
        self._stopping.set()
        if self.kept:  # a clean shutdown: the next start needs no recovery
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "stop"
            )
            return
        try:
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"
            )
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_template(self) -> None:
        """A database migrated to the latest schema: each test's copy starts from it."""
        import asyncio

        self.admin("CREATE DATABASE mirror_template")

        async def migrate() -> None:
            async with Memory(self.url("mirror_template")):
                pass

        asyncio.run(migrate())

    def new_database(self, *, empty: bool = False) -> str:
        """A fresh database (migrated unless `empty`); returns its URL.

        A migrated one comes from a queue a background thread keeps two ahead (CREATE
        DATABASE copies files: about 0.3 s, and 1 s on a busy 2-core host), so the copy
        overlaps the previous test."""
        if empty:
            return self._create("template0")
        if self._ahead is None:
            self._ahead = queue.Queue(maxsize=2)
            threading.Thread(target=self._keep_ahead, daemon=True).start()
        url = self._ahead.get(timeout=120)
        if isinstance(url, BaseException):
            raise url
        return url

    def _create(self, template: str) -> str:
        with self._serial_lock:
            self._serial += 1
            name = f"test_{os.getpid()}_{self._serial}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def _keep_ahead(self) -> None:
        assert self._ahead is not None
        while not self._stopping.is_set():
            try:
                made: str | BaseException = self._create("mirror_template")
            except Exception as exc:  # handed to the test that waits for a database
                made = exc
            while not self._stopping.is_set():
                try:
                    self._ahead.put(made, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/install-test-deps.sh installs it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]')")
    cluster = Cluster(bin_dir)
    try:
        cluster.start()
        cluster.create_template()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test."""
    url = pg_cluster.new_database()
    try:
        yield url
    finally:
        pg_cluster.drop(url)


ENGINES = ("sqlite", "postgresql")


def parametrize_engines(metafunc: pytest.Metafunc) -> None:
    """`pytest_generate_tests` for tests/conftest.py: a test of a module marked
    `pytestmark = pytest.mark.both_engines` that uses `memory` or `memory_location` runs
    once per engine."""
    if metafunc.definition.get_closest_marker("both_engines") is None:
        return
    if "memory_location" in metafunc.fixturenames:
        metafunc.parametrize("memory_location", ENGINES, indirect=True)


@pytest.fixture
def memory_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """Where this test's memory lives: a SQLite file (the default), or a fresh PostgreSQL
    database when the test runs on both engines."""
    engine = getattr(request, "param", "sqlite")
    if engine == "sqlite":
        yield tmp_path / "memory.db"
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    try:
        yield url
    finally:
        cluster.drop(url)


def sql_rows(location: Path | str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows of one read, outside `Memory`, on either engine (for a test to look under the
    stores); `sql` in the stores' SQLite dialect."""
    if isinstance(location, str) and location.startswith("postgresql://"):
        import psycopg

        from bot.memory.pg_dialect import translate

        with psycopg.connect(location, cursor_factory=psycopg.ClientCursor) as conn:
            statement = translate(sql, bool(params))
            return [tuple(row) for row in conn.execute(statement.sql, params or None)]
    import sqlite3

    conn = sqlite3.connect(location)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
