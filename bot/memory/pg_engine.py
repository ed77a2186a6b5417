"""Memory on PostgreSQL: the connections, transactions, migrations and awareness of one process.

`bot.memory.database.Database` hands its work here when its location is a
`postgresql://` URL. The stores do not change: each logical write or read snapshot is
still one function `fn(conn)` run in one worker thread, here on a psycopg (3, sync)
connection behind `PgConnection`, which answers the part of `sqlite3.Connection` the
stores use and speaks their SQL through `bot.memory.pg_dialect`.

Why psycopg 3's sync API in a thread, not asyncpg: the stores are synchronous functions
holding a transaction (reads, rules in Python, writes), so they run unchanged in a worker
thread, one hand-off per logical write like aiosqlite; asyncpg would make every statement
an await on the event loop and every store async. Client-side binding (`ClientCursor`)
gives SQLite's untyped parameters (`:x IS NULL`, one name bound twice) without casts.

Writes are serialised like SQLite's BEGIN IMMEDIATE: each write transaction first takes
one transaction-scoped advisory lock, so the stores' read-decide-write functions (leases
and the scheduler's fence, token buckets, outbox claims, first-sight identities) see no
concurrent writer, and no serialisation failure can reach them. Reads are REPEATABLE READ
snapshots and never wait for the lock. A commit that changed rows sends NOTIFY on
`CHANNEL`; the listener connection (opened on first use) turns notifications into the
`data_version_now` counter the pollers watch.

Per process: one writer and one reader connection (each owned by its own thread) and a
listener: three connections, the pool a 2-core host needs (six processes: 18).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from bot.memory.pg_dialect import translate
from bot.memory.schema import MemoryDbError, MemoryUnavailable, SchemaTooNew

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "mirror_memory"  # NOTIFY channel: a commit changed memory
WRITE_LOCK = (0x4D49, 0x5252)  # pg_advisory_xact_lock(int, int): "MI", "RR"
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema" / "postgresql"
RETRY_ERRORS = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for logs and status lines."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


class Row:
    """A result row read by position or by column name, like sqlite3.Row."""

    __slots__ = ("_names", "_values")

    def __init__(self, values: Sequence[Any], names: dict[str, int]) -> None:
        self._values = values
        self._names = names

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._names[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._names, self._values, strict=False))!r})"


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names: dict[str, int] = {}
    for index, column in reversed(list(enumerate(cursor.description or []))):
        names[column.name] = index  # the first of two equal names wins, as in sqlite3
    ordered = dict(sorted(names.items(), key=lambda item: item[1]))
    return lambda values: Row(values, ordered)


class PgCursor:
    """What a store reads back from `execute`: rows, rowcount, lastrowid."""

    def __init__(self, cursor: Any, rowcount: int, lastrowid: int | None) -> None:
        self._cursor = cursor
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> Row | None:
        if self._cursor.description is None:
            return None
        row: Row | None = self._cursor.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        if self._cursor.description is None:
            return []
        found: list[Row] = self._cursor.fetchall()
        return found

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class PgConnection:
    """The part of sqlite3.Connection the stores use, over one psycopg connection."""

    def __init__(self, raw: psycopg.Connection[Any], begin: str | None = None) -> None:
        self.raw = raw
        self.changed = False  # a statement of this transaction wrote a row
        # The transaction's BEGIN (and lock), sent in one round trip with the first
        # statement: a turn's dozen transactions each save one.
        self._begin = begin
        self.begun = begin is None

    def _start(self, cursor: Any, sql: str, params: Any = None) -> None:
        """Run `sql`, after the pending BEGIN if this is the transaction's first statement;
        a connection found dead there is `Stale` (nothing of the transaction was sent)."""
        if self._begin is None:
            cursor.execute(sql, params)
            return
        prefix, self._begin = self._begin, None
        try:
            cursor.execute(f"{prefix}; {sql}", params)
        except psycopg.OperationalError as exc:
            raise Stale(str(exc)) from exc
        self.begun = True
        for _ in range(prefix.count(";") + 1):
            cursor.nextset()

    def start(self) -> None:
        """Send a pending BEGIN now (before a statement that cannot carry it)."""
        if self._begin is not None:
            prefix, self._begin = self._begin, None
            try:
                self.raw.cursor().execute(prefix)
            except psycopg.OperationalError as exc:
                raise Stale(str(exc)) from exc
            self.begun = True

    def execute(self, sql: str, params: Any = None) -> PgCursor:
        statement = translate(sql, params is not None)
        cursor = self.raw.cursor()
        if statement.ignore_unique:
            self.start()
            cursor.execute("SAVEPOINT ignore_unique")
            try:
                cursor.execute(statement.sql, params)
            except pg_errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT ignore_unique")
                cursor.execute("RELEASE SAVEPOINT ignore_unique")
                return PgCursor(cursor, 0, None)
            rowcount = cursor.rowcount
            self.raw.cursor().execute("RELEASE SAVEPOINT ignore_unique")
            self.changed = self.changed or rowcount > 0
            return PgCursor(cursor, rowcount, None)
        self._start(cursor, statement.sql, params)
        rowcount = cursor.rowcount
        lastrowid = None
        if statement.returns_id:
            first = cursor.fetchone()
            lastrowid = first[0] if first is not None else None
        if statement.writes and rowcount > 0:
            self.changed = True
        return PgCursor(cursor, rowcount, lastrowid)

    def executemany(self, sql: str, seq: Any) -> PgCursor:
        batch = list(seq)
        statement = translate(sql, True)
        cursor = self.raw.cursor()
        if not batch:
            return PgCursor(cursor, 0, None)
        self.start()
        sql_text = statement.sql
        if statement.returns_id:  # executemany has no lastrowid: no need for the id
            sql_text = sql_text.removesuffix(" RETURNING id")
        cursor.executemany(sql_text, batch)
        if statement.writes and cursor.rowcount != 0:
            self.changed = True
        return PgCursor(cursor, cursor.rowcount, None)


def connect(url: str, *, application: str = "mirroros") -> psycopg.Connection[Any]:
    try:
        raw: psycopg.Connection[Any] = psycopg.connect(
            url,
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
            row_factory=_row_factory,
            application_name=application,
            connect_timeout=10,
        )
    except psycopg.Error as exc:
        raise MemoryUnavailable(f"cannot connect to {redact(url)}: {_first_line(exc)}") from None
    return raw


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# Migrations --------------------------------------------------------------------------------


def schema_files(directory: Path = SCHEMA_DIR) -> list[tuple[int, Path]]:
    from bot.memory.schema import schema_files as numbered

    return numbered(directory)


def migrate(raw: psycopg.Connection[Any], files: list[tuple[int, Path]]) -> int:
    """Apply pending schema files, each in its own transaction, under the write lock; the
    versions applied are rows of `schema_migrations` (PostgreSQL has no user_version)."""
    latest = len(files)
    cursor = raw.cursor()
    while True:
        cursor.execute("BEGIN")
        try:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", WRITE_LOCK)
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at double precision NOT NULL)"
            )
            cursor.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = cursor.fetchone()
            version = int(row[0]) if row else 0
            if version > latest:
                raise SchemaTooNew(
                    f"the memory database has schema version {version} but this MirrorOS"
                    f" knows only {latest}; upgrade MirrorOS or use another database"
                )
            if version == latest:
                cursor.execute("COMMIT")
                return version
            number, path = files[version]
            cursor.execute(path.read_text(encoding="utf-8"))
            cursor.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (number, path.name, time.time()),
            )
            cursor.execute("COMMIT")
            log.info("memory (PostgreSQL): applied %s", path.name)
        except BaseException:
            if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                cursor.execute("ROLLBACK")
            raise


def schema_version(raw: psycopg.Connection[Any]) -> int:
    cursor = raw.cursor()
    cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = cursor.fetchone()
    if not row or not row[0]:
        return 0
    cursor.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    found = cursor.fetchone()
    return int(found[0]) if found else 0


# Transactions, in a connection's own thread ------------------------------------------------


class Stale(Exception):
    """The connection was found dead before a transaction did anything: connect again and
    run it again (nothing of it reached the server)."""


def write_in(raw: psycopg.Connection[Any], fn: Callable[..., T], *args: Any) -> T:
    """fn(conn, *args) in one write transaction under the write lock; NOTIFY when it wrote."""
    for attempt in range(5):
        conn = PgConnection(
            raw, f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK[0]}, {WRITE_LOCK[1]})"
        )
        cursor = raw.cursor()
        try:
            result = fn(conn, *args)
            if not conn.begun:  # nothing was asked: no transaction to end
                return result
            if conn.changed:
                cursor.execute(f"SELECT pg_notify('{CHANNEL}', ''); COMMIT")
            else:
                cursor.execute("COMMIT")
            return result
        except RETRY_ERRORS:
            _rollback(raw)
            if attempt == 4:
                raise
            time.sleep(0.01 * (attempt + 1))
        except BaseException:
            _rollback(raw)
            raise
    raise AssertionError("unreachable")


def read_in(raw: psycopg.Connection[Any], fn: Callable[..., T], *args: Any) -> T:
    """fn(conn, *args) in one REPEATABLE READ, READ ONLY transaction (a consistent snapshot)."""
    conn = PgConnection(raw, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        result = fn(conn, *args)
        if conn.begun:
            raw.cursor().execute("COMMIT")
        return result
    except BaseException:
        _rollback(raw)
        raise


def _rollback(raw: psycopg.Connection[Any]) -> None:
    if raw.closed or raw.broken:
        return
    if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        try:
            raw.cursor().execute("ROLLBACK")
        except psycopg.Error:
            pass


def _close_broken(raw: psycopg.Connection[Any] | None) -> None:
    if raw is not None:
        try:
            raw.close()
        except psycopg.Error:
            pass


class Worker:
    """One psycopg connection owned by one thread: every call runs there, in turn."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.raw: psycopg.Connection[Any] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mirror-pg-{name}")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, fn, args)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        for attempt in (1, 2):
            if self.raw is None or self.raw.closed or self.raw.broken:
                if self.raw is not None:
                    log.warning("memory (PostgreSQL): %s connection lost; reconnecting", self.name)
                self.raw = connect(self.url, application=f"mirroros-{self.name}")
            try:
                return fn(self.raw, *args)
            except Stale as exc:
                _close_broken(self.raw)
                if attempt == 2:
                    raise MemoryUnavailable(
                        f"memory at {redact(self.url)} is unavailable: {exc}"
                    ) from None
            except psycopg.OperationalError as exc:
                raise MemoryUnavailable(
                    f"memory at {redact(self.url)} is unavailable: {_first_line(exc)}"
                ) from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        raw, self.raw = self.raw, None
        loop = asyncio.get_running_loop()
        if raw is not None:
            await loop.run_in_executor(self._thread, raw.close)
        await loop.run_in_executor(None, self._thread.shutdown)


class Listener:
    """LISTEN on `CHANNEL` from the event loop; counts notifications (the data version).

    `version` is None while not listening (pollers then check every time). After a
    (re)connection it moves on by itself: whatever was committed while nobody listened
    is read again by every poller that watches it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.version: int | None = None
        self.connected = asyncio.Event()
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.on_change: list[Callable[[], None]] = []

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="pg-listen")

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name="mirroros-listen"
                )
                await self._conn.execute(f"LISTEN {CHANNEL}")
                backoff = 0.1
                self._bump()
                self.connected.set()
                async for _ in self._conn.notifies():
                    self._bump()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("memory (PostgreSQL): LISTEN connection lost (%s); again", exc)
            finally:
                self.version = None
                self.connected.clear()
                conn, self._conn = self._conn, None
                if conn is not None:
                    await _close_quietly(conn)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _bump(self) -> None:
        self._count += 1
        self.version = self._count
        for callback in self.on_change:
            callback()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except (psycopg.Error, OSError):
        pass


class PgDatabase:
    """The PostgreSQL side of `Database`: what it does with a `postgresql://` location."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.writer = Worker(url, "writer")
        self.reader = Worker(url, "reader")
        self.listener = Listener(url)
        self.schema_version = 0

    async def open(self) -> int:
        self.schema_version = await self.writer.call(migrate, schema_files())
        await self.reader.call(lambda raw: None)
        return self.schema_version

    async def close(self) -> None:
        await self.listener.close()
        await self.reader.close()
        await self.writer.close()

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.writer.call(write_in, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.reader.call(read_in, fn, *args)

    def data_version_now(self) -> int | None:
        self.listener.start()
        return self.listener.version

    async def health(self) -> dict[str, Any]:
        """Connection, schema version and the LISTEN channel, for `mirror doctor`."""
        started = time.monotonic()

        def check(raw: psycopg.Connection[Any]) -> tuple[str, int]:
            cursor = raw.cursor()
            cursor.execute("SELECT current_setting('server_version')")
            row = cursor.fetchone()
            return str(row[0]) if row else "?", schema_version(raw)

        server, version = await self.reader.call(check)
        self.listener.start()
        heard = await self._notify_round_trip()
        return {
            "engine": "postgresql",
            "location": redact(self.url),
            "server_version": server,
            "schema_version": version,
            "schema_latest": len(schema_files()),
            "listen": heard is not None,
            "notify_round_trip_ms": None if heard is None else round(heard * 1000, 2),
            "connect_ms": round((time.monotonic() - started) * 1000, 2),
        }

    async def _notify_round_trip(self, wait_s: float = 5.0) -> float | None:
        try:
            await asyncio.wait_for(self.listener.connected.wait(), wait_s)
        except TimeoutError:
            return None
        before = self.listener.version
        heard = asyncio.Event()

        def changed() -> None:
            heard.set()

        self.listener.on_change.append(changed)
        try:
            started = time.monotonic()
            await self.writer.call(
                lambda raw: raw.cursor().execute(f"SELECT pg_notify('{CHANNEL}', 'health')")
            )
            await asyncio.wait_for(heard.wait(), wait_s)
            return time.monotonic() - started if self.listener.version != before else None
        except TimeoutError:
            return None
        finally:
            self.listener.on_change.remove(changed)


def check_engine(url: str) -> dict[str, Any]:
    """`PgDatabase.health` without an event loop of one's own (for `mirror doctor`)."""

    async def go() -> dict[str, Any]:
        db = PgDatabase(url)
        try:
            return await db.health()
        finally:
            await db.close()

    return asyncio.run(go())


__all__ = [
    "CHANNEL",
    "MemoryDbError",
    "PgConnection",
    "PgDatabase",
    "check_engine",
    "is_postgres_url",
    "migrate",
    "redact",
    "schema_files",
]
