"""The memory.db connection: opening, pragmas, schema migrations and transactions.

Each process keeps two long-lived aiosqlite connections, one for writes and one for reads.
A logical write is one await: the whole `BEGIN IMMEDIATE … COMMIT` runs as one function in
the writer connection's thread (aiosqlite costs a thread hand-off per await, and a deferred
transaction that upgrades to a write gets 'database is locked' despite busy_timeout).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"
T = TypeVar("T")


class MemoryDbError(Exception):
    """Base class for memory.db problems shown to users."""


class SchemaTooNew(MemoryDbError):
    pass


class MemoryUnavailable(MemoryDbError):
    pass


def schema_files(directory: Path = SCHEMA_DIR) -> list[tuple[int, Path]]:
    """Numbered schema files (001_init.sql, 002_….sql) in order; numbering must be dense."""
    files: list[tuple[int, Path]] = []
    for path in sorted(directory.glob("*.sql")):
        prefix = path.name.split("_", 1)[0]
        if prefix.isdigit():
            files.append((int(prefix), path))
    for expected, (number, path) in enumerate(files, start=1):
        if number != expected:
            raise MemoryDbError(f"schema file {path.name} is out of sequence (expected {expected})")
    return files


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (trigger bodies stay whole)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current.append(line)
        candidate = "".join(current)
        if sqlite3.complete_statement(candidate):
            statements.append(candidate.strip())
            current = []
    if "".join(current).strip():
        raise MemoryDbError(f"incomplete SQL statement: {''.join(current)[:80]!r}")
    return statements


def _configure(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        log.warning("memory.db journal mode is %s, not WAL", mode)
    # WAL defaults to synchronous=FULL here; NORMAL is durable across a process crash and
    # commits about 4x faster.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def _migrate(conn: sqlite3.Connection, files: list[tuple[int, Path]]) -> int:
    """Apply pending schema files, each in its own immediate transaction."""
    latest = len(files)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > latest:
                raise SchemaTooNew(
                    f"memory.db has schema version {version} but this MirrorOS knows only "
                    f"{latest}; upgrade MirrorOS or use another database"
                )
            if version == latest:
                conn.execute("COMMIT")
                return version
            number, path = files[version]
            for statement in split_statements(path.read_text(encoding="utf-8")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
            log.info("memory.db: applied %s", path.name)
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def audit_in(
    conn: sqlite3.Connection,
    at: float,
    actor: str,
    action: str,
    subject: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an audit row inside the caller's transaction."""
    conn.execute(
        "INSERT INTO audit (at, actor, action, subject, detail)"
        " VALUES (:at, :actor, :action, :subject, :detail)",
        {
            "at": at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "detail": json.dumps(detail, default=str) if detail else None,
        },
    )


class Database:
    """Two connections to one memory.db and the primitives every store builds on."""

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.clock: Callable[[], float] = time.time
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self.schema_version = 0

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryUnavailable(f"cannot create {self.path.parent}: {exc.strerror}") from None
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            await self._writer._execute(_configure, self._writer._conn, self.busy_timeout_ms)
            self.schema_version = await self._writer._execute(
                _migrate, self._writer._conn, schema_files()
            )
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader._execute(_configure, self._reader._conn, self.busy_timeout_ms)
        except sqlite3.DatabaseError as exc:
            await self.close()
            raise MemoryUnavailable(f"cannot open {self.path}: {exc}") from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def now(self) -> float:
        return self.clock()

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) inside BEGIN IMMEDIATE … COMMIT in the writer's thread."""
        conn = self._require(self._writer)

        def transaction(raw: sqlite3.Connection) -> T:
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = fn(raw, *args)
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
            return result

        return await conn._execute(transaction, conn._conn)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) in one read transaction (a consistent snapshot)."""
        conn = self._require(self._reader)

        def snapshot(raw: sqlite3.Connection) -> T:
            raw.execute("BEGIN")
            try:
                return fn(raw, *args)
            finally:
                raw.execute("COMMIT")

        return await conn._execute(snapshot, conn._conn)

    async def data_version(self) -> int:
        """Changes when another connection commits: a cheap 'anything new?' check."""
        conn = self._require(self._reader)
        return await conn._execute(
            lambda raw: raw.execute("PRAGMA data_version").fetchone()[0], conn._conn
        )

    async def audit(
        self, actor: str, action: str, subject: str | None = None, **detail: Any
    ) -> None:
        await self.write(audit_in, self.now, actor, action, subject, detail)

    async def backup(self, target: Path) -> None:
        """SQLite's online backup API: consistent while other processes write."""
        conn = self._require(self._reader)
        target.parent.mkdir(parents=True, exist_ok=True)

        def run(raw: sqlite3.Connection) -> None:
            destination = sqlite3.connect(target)
            try:
                raw.backup(destination, pages=1024)
            finally:
                destination.close()

        await conn._execute(run, conn._conn)

    def _require(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise MemoryUnavailable("memory.db is not open")
        return conn
