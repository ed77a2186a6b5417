"""The memory.db connection in a running process: two aiosqlite connections, transactions.

Each process keeps two long-lived aiosqlite connections, one for writes and one for reads.
A logical write is one await: the whole `BEGIN IMMEDIATE … COMMIT` runs as one function in
the writer connection's thread (aiosqlite costs a thread hand-off per await, and a deferred
transaction that upgrades to a write gets 'database is locked' despite busy_timeout).

WAL checkpoints run off the turn path: left to SQLite, the commit that crosses 1000 WAL
pages copies them into the database and fsyncs it; a turn writes about 45 pages, so one
turn in 20-25 paid 20-30 ms for it (the whole p99 of a turn at a million messages).
Instead, a process that has written checkpoints (PASSIVE) at most once a second from a
third connection in its own thread, which nobody awaits (in production it runs while the
turn waits for the model); SQLite's own auto-checkpoint stays as a backstop at 10 000
pages.

A `postgresql://` location instead of a path puts the same contract on PostgreSQL
(`bot.memory.pg_engine`): every method below hands its work there first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiosqlite

from bot import clock
from bot.memory.bell import Bell, take_ring
from bot.memory.schema import (
    MemoryDbError,
    MemoryUnavailable,
    SchemaTooNew,
    configure,
    migrate,
    schema_files,
    split_statements,
)

__all__ = [
    "Database",
    "MemoryDbError",
    "MemoryUnavailable",
    "SchemaTooNew",
    "audit_in",
    "run_in_thread",
    "schema_files",
    "split_statements",
]

if TYPE_CHECKING:
    from bot.memory.pg_engine import PgDatabase
    from bot.models import SoulVersion

log = logging.getLogger(__name__)

T = TypeVar("T")

# What SQLite says when memory.db cannot be written at all (not a passing lock).
UNWRITABLE = ("disk is full", "readonly", "read-only", "disk I/O error", "unable to open")
CHECKPOINT_EVERY_S = 1.0  # a writing process checkpoints in the background this often


async def run_in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run fn(sqlite3 connection, *args) in `conn`'s own thread, as one await.

    The one place MirrorOS touches aiosqlite's private API (`Connection._execute(fn,
    *args)` and `_conn`, the sqlite3 connection its thread owns). Why: every await of
    aiosqlite's public API is a thread hand-off (~67 µs measured), so a transaction made
    of BEGIN, statements and COMMIT would pay it per statement and hold the write lock
    across the hand-offs; this runs a whole logical write (or read snapshot) in one.
    tests/test_aiosqlite_seam.py fails, naming the attribute, if aiosqlite changes them.
    """
    return await conn._execute(fn, conn._conn, *args)


async def connect(path: Path) -> aiosqlite.Connection:
    """An aiosqlite connection to `path` (autocommit: transactions are explicit).

    When the connection cannot be made (a folder, a full or read-only disk), aiosqlite
    queues its worker thread's stop without waiting for it; a command that then exits
    closes the event loop first and the thread prints "Event loop is closed" after the
    clean error line. So wait for the thread here (private `_thread`: the same seam as
    `run_in_thread`, checked by the same test).
    """
    conn = aiosqlite.connect(path, isolation_level=None)
    try:
        return await conn
    except BaseException:
        await asyncio.to_thread(conn._thread.join, 5.0)
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

    # The last active soul read by this process (soul_store's `active_soul`, and the turn
    # view, which reads it in its own snapshot).
    _soul: SoulVersion | None = None

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5000) -> None:
        self._pg: PgDatabase | None = None
        if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
            from bot.memory.pg_engine import PgDatabase

            self._pg = PgDatabase(path)
        # On PostgreSQL, `path` is the URL (a str): shown, never opened as a file.
        self.path: Path = Path(path) if self._pg is None else path  # type: ignore[assignment]
        self.busy_timeout_ms = busy_timeout_ms
        self.clock: Callable[[], float] = clock.now
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._peeker: sqlite3.Connection | None = None  # `peek`: the event loop's own
        self._checkpoint_task: asyncio.Task[None] | None = None
        # The outbox bell (bot/memory/bell.py): rung after commits that queued rows.
        self._bell = Bell(Path(f"{self.path}-bell"), self.path) if self._pg is None else None
        self._checkpointed_at = 0.0  # time.monotonic() of the last background checkpoint
        self.schema_version = 0

    @property
    def engine(self) -> str:
        """'sqlite' or 'postgresql'."""
        return "sqlite" if self._pg is None else "postgresql"

    async def health(self) -> dict[str, Any]:
        """Engine, location, schema version (and, on PostgreSQL, the server and whether the
        LISTEN channel hears a NOTIFY, with its round trip): for `mirror doctor`."""
        if self._pg is not None:
            return await self._pg.health()
        return {
            "engine": "sqlite",
            "location": str(self.path),
            "schema_version": self.schema_version,
            "schema_latest": len(schema_files()),
            "listen": None,
        }

    async def open(self) -> None:
        if self._pg is not None:
            self.schema_version = await self._pg.open()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryUnavailable(f"cannot create {self.path.parent}: {exc.strerror}") from None
        # Two processes creating memory.db at once: switching a new file to WAL needs it to
        # itself, and the busy handler does not cover that; the loser waits and tries again.
        deadline = time.monotonic() + max(self.busy_timeout_ms, 1000) / 1000
        while True:
            try:
                self._writer = await connect(self.path)
                await run_in_thread(self._writer, configure, self.busy_timeout_ms)
                self.schema_version = await run_in_thread(self._writer, migrate, schema_files())
                self._reader = await connect(self.path)
                await run_in_thread(self._reader, configure, self.busy_timeout_ms)
                return
            except sqlite3.OperationalError as exc:
                await self.close()
                if "locked" in str(exc) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    continue
                raise MemoryUnavailable(f"cannot open {self.path}: {exc}") from None
            except sqlite3.DatabaseError as exc:
                await self.close()
                raise MemoryUnavailable(f"cannot open {self.path}: {exc}") from None
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
            return
        task, self._checkpoint_task = self._checkpoint_task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if self._peeker is not None:
            self._peeker.close()
            self._peeker = None
        if self._bell is not None:
            self._bell.close()
        for conn in (self._checkpointer, self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._checkpointer = self._reader = self._writer = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def now(self) -> float:
        return self.clock()

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) inside BEGIN IMMEDIATE … COMMIT in the writer's thread."""
        if self._pg is not None:
            return await self._pg.write(fn, *args)
        conn = self._require(self._writer)

        def transaction(raw: sqlite3.Connection) -> tuple[T, bool]:
            changes = raw.total_changes
            take_ring()  # only this transaction's rows ring the outbox bell
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = fn(raw, *args)
                raw.execute("COMMIT")  # on a full disk, the commit is what fails
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            if take_ring() and self._bell is not None:
                self._bell.ring()
            return result, raw.total_changes != changes

        try:
            result, changed = await run_in_thread(conn, transaction)
        except sqlite3.OperationalError as exc:
            if any(sign in str(exc) for sign in UNWRITABLE):
                raise MemoryUnavailable(f"cannot write {self.path}: {exc}") from None
            raise
        if changed:
            self._maybe_checkpoint()
        return result

    def _maybe_checkpoint(self) -> None:
        """After a commit that changed rows: a background checkpoint, at most one a second."""
        now = time.monotonic()
        if now - self._checkpointed_at < CHECKPOINT_EVERY_S or self._checkpoint_task is not None:
            return
        self._checkpointed_at = now
        self._checkpoint_task = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            if self._checkpointer is None:
                self._checkpointer = await connect(self.path)
                await run_in_thread(self._checkpointer, configure, self.busy_timeout_ms)
            await run_in_thread(
                self._checkpointer,
                lambda raw: raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone(),
            )
        except sqlite3.Error as exc:  # SQLite's own auto-checkpoint is the backstop
            log.debug("background checkpoint of %s failed: %s", self.path, exc)
        finally:
            self._checkpoint_task = None

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) in one read transaction (a consistent snapshot)."""
        if self._pg is not None:
            return await self._pg.read(fn, *args)
        conn = self._require(self._reader)

        def snapshot(raw: sqlite3.Connection) -> T:
            raw.execute("BEGIN")
            try:
                return fn(raw, *args)
            finally:
                raw.execute("COMMIT")

        return await run_in_thread(conn, snapshot)

    async def data_version(self) -> int:
        """Changes when another connection commits: a cheap 'anything new?' check."""
        if self._pg is not None:
            return self._pg.data_version_now() or 0
        conn = self._require(self._reader)
        return await run_in_thread(
            conn, lambda raw: int(raw.execute("PRAGMA data_version").fetchone()[0])
        )

    def data_version_now(self) -> int | None:
        """`data_version` without a thread hand-off, for pollers (None: ask again later).

        On PostgreSQL, the count of NOTIFYs heard (commits that changed rows, by any process
        on any host), None while the LISTEN connection is down."""
        if self._pg is not None:
            return self._pg.data_version_now()
        value = self.peek("PRAGMA data_version")
        return None if value is None else int(value)

    @property
    def hears_outbox(self) -> bool:
        """Whether `wait_for_outbox` ends when rows are queued (so a courier may wait long):
        on SQLite while the outbox bell is watched (bot/memory/bell.py: Linux), on
        PostgreSQL while the LISTEN connection is up; otherwise it only sleeps."""
        if self._pg is not None:
            return self._pg.data_version_now() is not None
        assert self._bell is not None
        return self._reader is not None and self._bell.heard

    async def wait_for_outbox(self, timeout_s: float) -> None:
        """A courier's pause: until a commit queues outbox rows due now (the outbox bell;
        one rung since the last wait ends it at once), `timeout_s` at the latest. Without
        `hears_outbox` it is a plain sleep of `timeout_s`."""
        if self._pg is not None:
            await self._pg.wait_for_outbox(timeout_s)
        elif self.hears_outbox:
            assert self._bell is not None
            await self._bell.wait(timeout_s)
        else:
            await asyncio.sleep(timeout_s)

    def peek(self, sql: str, params: Mapping[str, Any] | None = None) -> Any | None:
        """The first column of a one-row read, run on the event loop (None when busy).

        The only sqlite3 calls made on the event loop, on purpose, and only for tiny reads
        (a pragma, the max of a primary key, an index seek that answers yes or no): a WAL
        reader takes no lock it could wait for, and with busy_timeout 0 SQLite answers BUSY
        rather than sleep, so a peek costs microseconds; through aiosqlite each would wake
        a thread twice (about 0.2 ms of CPU on a small VM: 1% of a core for a poller at 20
        checks a second).

        On PostgreSQL every read is a network round trip, which must not block the event
        loop: None ("ask again with a real read").
        """
        if self._pg is not None:
            return None
        self._require(self._reader)
        if self._peeker is None:
            self._peeker = sqlite3.connect(self.path, isolation_level=None)
            self._peeker.execute("PRAGMA busy_timeout = 0")
        try:
            row = self._peeker.execute(sql, params or {}).fetchone()
        except sqlite3.OperationalError:  # busy: a checkpoint is resetting the WAL
            return None
        return row[0] if row else None

    async def audit(
        self, actor: str, action: str, subject: str | None = None, **detail: Any
    ) -> None:
        await self.write(audit_in, self.now, actor, action, subject, detail)

    async def backup(self, target: Path) -> None:
        """SQLite's online backup API: consistent while other processes write. On
        PostgreSQL, a copy into a new SQLite file (`bot.memory.pg_copy`; pg_dump is the
        server's own backup)."""
        if self._pg is not None:
            from bot.memory.pg_copy import copy_memory

            await asyncio.to_thread(copy_memory, self._pg.url, str(target))
            return
        conn = self._require(self._reader)
        target.parent.mkdir(parents=True, exist_ok=True)

        def run(raw: sqlite3.Connection) -> None:
            destination = sqlite3.connect(target)
            try:
                raw.backup(destination, pages=1024)
            finally:
                destination.close()

        await run_in_thread(conn, run)

    def _require(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise MemoryUnavailable("memory.db is not open")
        return conn
