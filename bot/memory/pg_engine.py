"""Memory on PostgreSQL: the connections, transactions, migrations and awareness of one process.

`bot.memory.database.Database` hands its work here when its location is a
`postgresql://` URL. The stores do not change: each logical write or read snapshot is
still one function `fn(conn)`, here run in a greenlet on the event loop's thread
(bot/memory/pg_green.py: no hand-off between threads) on a psycopg (3, sync) connection
behind `PgConnection`, which answers the part of `sqlite3.Connection` the stores use and
speaks their SQL through `bot.memory.pg_dialect`.

Why psycopg 3's sync API, not asyncpg: the stores are synchronous functions holding a
transaction (reads, rules in Python, writes), so they run unchanged (on SQLite in a worker
thread, like aiosqlite); asyncpg would make every statement an await on the event loop
and every store async. A greenlet gives the sync API the loop's waits instead (pg_green).
Client-side binding (`Binder`, as `ClientCursor` binds) gives SQLite's untyped parameters
(`:x IS NULL`, one name bound twice) without casts.

Writes are serialised like SQLite's BEGIN IMMEDIATE: each write transaction first takes
one transaction-scoped advisory lock, so the stores' read-decide-write functions (leases
and the scheduler's fence, token buckets, outbox claims, first-sight identities) see no
concurrent writer, and no serialisation failure can reach them. Reads are REPEATABLE READ
snapshots and never wait for the lock. A commit that changed rows sends NOTIFY on
`CHANNEL`; the listener connection (opened on first use) turns notifications into the
`data_version_now` counter the pollers watch. One that queued outbox rows says so in its
payload ('outbox'): the couriers wait for those alone (bot/memory/bell.py).

Per process: one writer and one reader connection (`Worker`: one call at a time each) and
a listener in a thread of its own: three connections, the pool a 2-core host needs; a
process that reads word searches (a turn view) opens the reader's side line too
(`SideLine`): four (six processes: at most 24).

A turn's cost on PostgreSQL is mostly round trips (bench/pg.py counts them), so a
transaction sends as few messages as it can: its BEGIN goes with its first statement,
writes with nothing to read back wait for the next statement or the COMMIT
(`PgConnection`), `executemany` of an INSERT is one statement, reads issued before any is
consumed go in one message (`PgConnection`: the turn view's dozen, the guard's), and a
read's COMMIT goes with the next read (`read_in`). Commits do not wait for the WAL flush
(`session_options`: SQLite's synchronous=NORMAL). schema/postgresql/planner.sql holds the
indexes only PostgreSQL's planner needs (`apply_planner_file`).

The server's own work per statement is kept small too: no JIT (it compiled reads of a few
rows for 10 ms), and a read or write whose plan does not depend on its values is prepared on
its connection once and then only executed (`prepared_call`: planning the turn view's joins
cost 0.3-0.7 ms a statement; a turn's writes, 0.2 ms in all). With the dialect's
newest-matches rule (word recall: 3-4 ms -> 0.4-1 ms) the turn at 1M messages (bench/pg.py,
loopback, a busy 2-core host) went from 32 ms to 15 ms at p50 with 25 round trips a turn.
Reads sent together (issue 22) took that to 14 a turn, but the turn only from 14.8 to 14.3
ms at p50 (its context part 7.7 -> 6.8; 7 paired runs, load 1.7-3.1): a loopback round trip
costs about 0.1 ms here. What is left is mostly the server's own work: the turn view's
message (3 ms at p50, 2.3 of it the two word searches), the reply's commit with its rows (2
ms), and planning the unprepared reads that join messages (the guard's outgoing_log read: 2
ms of planning for 0.06 of execution, the planner probing the ends of messages' primary
key). Since then the word search over messages runs beside the view's other reads
(`SideLine`). A production turn's remaining round trips: the recording's two (the BEGIN with
its reads, then the writes with the COMMIT; the guard's admission rides in it,
bot/memory/rate_buckets.py), the view's message, with a second one (the index's new rows,
and the read-back of what they add to recall's hits) in about one turn in three, and the
reply's one (its rows name its id in SQL, bot/memory/turn_store.py `REPLY_ID_SQL`, so
nothing waits for its INSERT).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import ExecStatus

from bot.memory import pg_green
from bot.memory.bell import take_ring
from bot.memory.pg_dialect import RowsInsert, Statement, top_level_items, translate
from bot.memory.pg_green import GreenConnection
from bot.memory.schema import MemoryDbError, MemoryUnavailable, SchemaTooNew
from bot.timeouts import wait_event

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "mirror_memory"  # NOTIFY channel: a commit changed memory
OUTBOX_RUNG = "outbox"  # the payload of one that queued outbox rows (bot/memory/bell.py)
_OUTBOX_RUNG_BYTES = OUTBOX_RUNG.encode()
WRITE_LOCK = (0x4D49, 0x5252)  # pg_advisory_xact_lock(int, int): "MI", "RR"
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema" / "postgresql"
PLANNER_FILE = SCHEMA_DIR / "planner.sql"  # PostgreSQL-only indexes (not numbered)
RETRY_ERRORS = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
NOTIFY_IF_WRITTEN = (
    f"SELECT pg_notify('{CHANNEL}', '') WHERE pg_current_xact_id_if_assigned() IS NOT NULL"
)
READ_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
READ_LINGER_S = 0.05  # a read transaction left open ends after this long without a call
MANY_ROWS = 500  # rows per statement of `executemany` (an INSERT of many VALUES rows)
# What a statement waiting in `PgConnection` is: a write (whose lastrowid is wanted), a
# read, or a read that searches words and may run on the reader's side line.
_WRITE, _WRITE_ID, _READ, _SEARCH = 0, 1, 2, 3
_READS = (_READ, _SEARCH)
_IN_TRANSACTION = psycopg.pq.TransactionStatus.INTRANS
_ACTIVE = psycopg.pq.TransactionStatus.ACTIVE


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


# A result's column names (as the server sent them) -> a Row's names: a turn reads some
# forty results of a dozen shapes, and psycopg asks for a row maker for each.
_ROW_NAMES: dict[tuple[bytes | None, ...], dict[str, int]] = {}
MAX_ROW_SHAPES = 1000


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    result = cursor.pgresult
    fields = tuple(result.fname(i) for i in range(result.nfields)) if result is not None else ()
    ordered = _ROW_NAMES.get(fields)
    if ordered is None:
        names: dict[str, int] = {}
        for index, column in reversed(list(enumerate(cursor.description or []))):
            names[column.name] = index  # the first of two equal names wins, as in sqlite3
        ordered = dict(sorted(names.items(), key=lambda item: item[1]))
        if len(_ROW_NAMES) < MAX_ROW_SHAPES:
            _ROW_NAMES[fields] = ordered
    return lambda values: Row(values, ordered)


def returns_rows(cursor: Any) -> bool:
    """Whether the cursor's current result holds rows: psycopg's `description`, without
    building a Column object per column each time it is asked (a turn asks ~50 times)."""
    result = cursor.pgresult
    return result is not None and (result.nfields > 0 or result.status == ExecStatus.TUPLES_OK)


class PgCursor:
    """What a store reads back from `execute`: rows, rowcount, lastrowid.

    A deferred write's cursor (see `PgConnection`) has no rows, and its rowcount and
    lastrowid are known once the statement has run: asking for them sends it. A waiting
    read's cursor (`PgConnection`: reads issued before any is consumed) holds its rows once
    sent: asking for them sends it, with whatever else waits."""

    def __init__(
        self,
        cursor: Any,
        rowcount: int,
        lastrowid: int | None,
        owner: PgConnection | None = None,
    ) -> None:
        self._cursor = cursor
        self._rowcount = rowcount
        self._lastrowid = lastrowid
        self._owner = owner  # set while the statement waits in `owner`'s queue
        self._rows: list[Row] | None = None  # a waiting read's rows, once it was sent
        self._read = False  # a waiting read (its rows come with the message that sent it)
        self._at = 0  # the next of `_rows` to fetch

    @property
    def rowcount(self) -> int:
        if self._owner is not None:
            self._owner.flush()
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:
        if self._owner is not None:
            self._owner.flush()
        return self._lastrowid

    def _settle(self, rowcount: int, lastrowid: int | None) -> None:
        self._rowcount += max(rowcount, 0)
        if lastrowid is not None:
            self._lastrowid = lastrowid

    def _hold(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self._rowcount = rowcount

    def _sent_rows(self) -> list[Row]:
        """A waiting read's rows: sent now if it still waits."""
        if self._owner is not None:
            self._owner.flush()
        if self._rows is None:  # its message failed, or its transaction ended unsent
            raise MemoryDbError("a read was asked for rows it never received")
        return self._rows

    def fetchone(self) -> Row | None:
        if self._read:
            rows = self._sent_rows()
            if self._at >= len(rows):
                return None
            self._at += 1
            return rows[self._at - 1]
        if self._cursor is None or not returns_rows(self._cursor):
            return None
        row: Row | None = self._cursor.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        if self._read:
            rows = self._sent_rows()
            rest, self._at = rows[self._at :], len(rows)
            return rest
        if self._cursor is None or not returns_rows(self._cursor):
            return []
        found: list[Row] = self._cursor.fetchall()
        return found

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


_Queued = tuple[str, PgCursor, int]  # a statement waiting in `PgConnection`: text, cursor, kind
_Rows = tuple[list[Row], int]  # a read's rows and rowcount


# Client-side binding --------------------------------------------------------------------------
#
# `ClientCursor.mogrify` parses its statement and looks up a dumper for each value on every
# call: 14 µs for a turn view's `EXECUTE name(…)`, 30 for a store's INSERT (0.45 ms of a
# turn's CPU, with a cursor made for each). `Binder` splits a statement at its placeholders
# once (`_template`), writes the common literals itself (ints, None, bools: what psycopg
# writes for them) and asks psycopg's own dumpers for the rest (`Transformer.as_literal`:
# text, floats, bytes). The same text, a quarter of the time.

_PARAM = re.compile(r"%%|%\((\w+)\)s|%s")
_Template = tuple[tuple[str, ...], tuple[str | int, ...]]  # pieces, and the keys between them
_TEMPLATES: dict[str, _Template | None] = {}
MAX_TEMPLATES = 2000  # statements remembered (the stores have a few hundred)


def _template(sql: str) -> _Template | None:
    """`sql` split at its placeholders (`%%` is `%` in the pieces); None when psycopg would
    read it otherwise (a stray `%`, or names and positions mixed): `mogrify` binds it."""
    if sql in _TEMPLATES:
        return _TEMPLATES[sql]
    pieces: list[str] = []
    keys: list[str | int] = []
    current: list[str] = []
    at = 0
    for match in _PARAM.finditer(sql):
        current.append(sql[at : match.start()])
        at = match.end()
        if match.group(0) == "%%":
            current.append("%")
            continue
        pieces.append("".join(current))
        current = []
        keys.append(match.group(1) if match.group(1) is not None else len(keys))
    pieces.append("".join([*current, sql[at:]]))
    named = sum(isinstance(key, str) for key in keys)
    found = None
    if "%" not in _PARAM.sub("", sql) and named in (0, len(keys)):
        found = (tuple(pieces), tuple(keys))
    if len(_TEMPLATES) < MAX_TEMPLATES:
        _TEMPLATES[sql] = found
    return found


class Binder:
    """Statements bound client-side on one connection, as `ClientCursor.mogrify` binds them
    (see above)."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self._as_literal: Callable[[Any], bytes] | None = None
        self._encoding = ""

    def literal(self, value: Any) -> str:
        kind = type(value)
        if kind is int:  # its digits; a negative one after a space, against `--` (psycopg's)
            return str(value) if value >= 0 else f" {value}"
        if value is None:
            return "NULL"
        if kind is bool:
            return "true" if value else "false"
        if self._as_literal is None:
            self._as_literal = psycopg.adapt.Transformer(self.raw).as_literal
            self._encoding = self.raw.info.encoding
        return self._as_literal(value).decode(self._encoding)

    def bind(self, sql: str, params: Any) -> str:
        """`sql` with `params` (a sequence for `%s`, a mapping for `%(name)s`) as literals."""
        template = _template(sql)
        if template is not None:
            pieces, keys = template
            named = bool(keys) and isinstance(keys[0], str)
            if isinstance(params, (str, bytes)):
                pass
            elif named == isinstance(params, dict) and (named or len(params) == len(keys)):
                try:
                    values = [params[key] for key in keys]
                except (KeyError, IndexError, TypeError):
                    pass  # psycopg says what is wrong
                else:
                    parts = [pieces[0]]
                    for value, piece in zip(values, pieces[1:], strict=True):
                        parts.append(self.literal(value))
                        parts.append(piece)
                    return "".join(parts)
        cursor: Any = self.raw.cursor()  # a ClientCursor (`connect`)
        return str(cursor.mogrify(sql, params))


_BINDERS: weakref.WeakKeyDictionary[Any, Binder] = weakref.WeakKeyDictionary()


def binder(raw: psycopg.Connection[Any]) -> Binder:
    """The connection's `Binder`."""
    found = _BINDERS.get(raw)
    if found is None:
        found = _BINDERS[raw] = Binder(raw)
    return found


def _bound_rows(binder: Binder, row: str, batch: list[Any]) -> list[str]:
    """`row` (`%s` placeholders) bound with each of `batch`'s parameter tuples."""
    pieces = row.split("%s")
    if "%" in "".join(pieces) or any(len(params) != len(pieces) - 1 for params in batch):
        return [binder.bind(row, params) for params in batch]  # what mogrify does with these
    literal = binder.literal
    head, tail = pieces[0], pieces[1:]
    bound = []
    for params in batch:
        parts = [head]
        for value, after in zip(params, tail, strict=True):
            parts.append(literal(value))
            parts.append(after)
        bound.append("".join(parts))
    return bound


class PgConnection:
    """The part of sqlite3.Connection the stores use, over one psycopg connection.

    Round trips, not the server's work, are most of a turn's cost on PostgreSQL (a loopback
    round trip is 0.1 ms on an idle host and 0.5-2 ms on a busy 2-core one, where each one
    waits for both processes to be scheduled). So a transaction sends as few as it can:
    - its BEGIN (and the write lock) travels with its first statement;
    - a write whose result is not read at once (INSERT, UPDATE or DELETE without the
      store's own RETURNING) is deferred: it waits, already bound, and goes with the next
      statement that returns rows, or with the COMMIT (`finish`), in one message. A store
      that reads its `rowcount` or `lastrowid` sends it then. An error of a deferred write
      surfaces at that next send, still inside the transaction, which is rolled back as
      before (no store catches a database error to carry on);
    - a read waits too (`execute` returns at once), until its rows, or those of a read
      issued after it, are asked for, or another statement is sent: reads issued one after
      another before any is consumed ("execute all, then fetch": the turn view's dozen)
      travel in one message, each with its own result. The statements still run in the
      order they were issued; only the round trips are fewer;
    - on a reader with a side line (`SideLine`), the first word search among such reads
      runs there, meanwhile: the server's slowest read of a turn no longer waits in line
      with the rest (a 2-core host runs both at once).
    """

    def __init__(
        self,
        raw: psycopg.Connection[Any],
        begin: str | None = None,
        side: SideLine | None = None,
    ) -> None:
        self.raw = raw
        self.side = side
        self.binder = binder(raw)
        self.changed = False  # a statement of this transaction wrote a row
        # The transaction's BEGIN (and lock), sent in one round trip with the first
        # statement: a turn's dozen transactions each save one.
        self._begin = begin
        self.begun = begin is None
        self._autocommit = begin is None  # no transaction: every statement goes at once
        # (bound SQL, cursor, what it is: _WRITE, _WRITE_ID (lastrowid), _READ or _SEARCH)
        self._queued: list[tuple[str, PgCursor, int]] = []
        self.deferred = 0  # writes deferred in this transaction (tests and benchmarks)
        self.waited = 0  # reads that waited for the next message (tests and benchmarks)
        # Reads wait (see above) inside a transaction: the stores' reads have no side
        # effect, so one issued and never consumed may go unsent (`drop_waiting_reads`).
        self.reads_wait = not self._autocommit

    @property
    def pending(self) -> bool:
        """Statements wait to be sent (the BEGIN, deferred writes, waiting reads)."""
        return bool(self._queued) or self._begin is not None

    def drop_waiting_reads(self) -> None:
        """Forget the reads still waiting (a read transaction ends: nobody asked for them);
        their cursors then refuse to fetch. Writes still waiting stay queued."""
        kept = []
        for entry in self._queued:
            if entry[2] in _READS:
                entry[1]._owner = None
            else:
                kept.append(entry)
        self._queued = kept

    def _send(self, cursor: Any, sql: str | None, params: Any = None, *, tail: str = "") -> None:
        """One message: the pending BEGIN, the deferred writes, then `sql` (bound with
        `params`) and `tail`; `cursor` is left on `sql`'s result. A connection found dead
        while the BEGIN was in the message (and no COMMIT) is `Stale`: nothing of the
        transaction can have been committed. A word search waiting among other statements
        runs on the side line meanwhile, if there is one (`SideLine`)."""
        queued, self._queued = self._queued, []
        prefix, self._begin = self._begin, None
        search = next((entry for entry in queued if entry[2] == _SEARCH), None)
        beside = None
        if search is not None and self.side is not None and (len(queued) > 1 or sql):
            beside = self.side.read(search[0])
        if search is None or beside is None:
            self._send_here(cursor, queued, prefix, sql, params, tail)
            return
        queued.remove(search)
        try:
            self._send_here(cursor, queued, prefix, sql, params, tail)
        finally:
            self._take_beside(search, beside)

    def _take_beside(self, search: _Queued, beside: Future[_Rows]) -> None:
        """The search's rows from the side line; if it failed, read here (in this
        transaction), unless the transaction itself failed meanwhile."""
        _, waiting, _ = search
        try:
            waiting._hold(*pg_green.result_of(beside))
            waiting._owner = None
            return
        except (psycopg.Error, MemoryUnavailable) as exc:
            log.warning("memory (PostgreSQL): a side read failed (%s); reading it here", exc)
        if self.raw.info.transaction_status == _IN_TRANSACTION:
            self._send_here(self.raw.cursor(), [search], None, None, None, "")
        else:
            waiting._owner = None  # its transaction failed: the error is on its way up

    def _send_here(
        self,
        cursor: Any,
        queued: list[_Queued],
        prefix: str | None,
        sql: str | None,
        params: Any,
        tail: str,
    ) -> None:
        """`_send`'s message, on this connection."""
        if not queued and prefix is None and not tail:
            if sql is not None:
                cursor.execute(sql, params)
            return
        parts = [prefix] if prefix is not None else []
        parts += [text for text, _, _ in queued]
        if sql is not None:
            parts.append(self.binder.bind(sql, params) if params is not None else sql)
        if tail:
            parts.append(tail)
        try:
            # Bound already, sent without parameters: psycopg reads no `%` in it.
            cursor.execute("; ".join(parts))
        except psycopg.OperationalError as exc:
            # Not with a COMMIT in the message: the server may have committed before the
            # connection broke, and running the transaction again would write it twice.
            if prefix is not None and "COMMIT" not in tail:
                raise Stale(str(exc)) from exc
            raise
        finally:
            for _, waiting, _ in queued:
                waiting._owner = None
        self.begun = True
        if prefix is not None:
            for _ in range(prefix.count(";") + 1):
                cursor.nextset()
        for _, waiting, kind in queued:
            if kind in _READS:
                waiting._hold(cursor.fetchall() if returns_rows(cursor) else [], cursor.rowcount)
            else:
                first = cursor.fetchone() if kind == _WRITE_ID and returns_rows(cursor) else None
                waiting._settle(cursor.rowcount, first[0] if first is not None else None)
                if cursor.rowcount > 0:
                    self.changed = True
            cursor.nextset()

    def flush(self) -> None:
        """Send what waits (the BEGIN, deferred writes) now."""
        if self.pending:
            self._send(self.raw.cursor(), None)

    def start(self) -> None:
        """Send a pending BEGIN now (before a statement that cannot carry it)."""
        self.flush()

    def finish(self, tail: str) -> None:
        """End the transaction: what waits, then `tail` (its COMMIT), in one message."""
        self._send(self.raw.cursor(), None, tail=tail)

    def _defer(self, text: str, cursor: PgCursor, returns_id: bool) -> None:
        cursor._owner = self
        self._queued.append((text, cursor, _WRITE_ID if returns_id else _WRITE))
        self.deferred += 1

    def _wait(self, text: str, kind: int = _READ) -> PgCursor:
        """A read that waits for the next message (see the class)."""
        lazy = PgCursor(None, 0, None, owner=self)
        lazy._read = True
        self._queued.append((text, lazy, kind))
        self.waited += 1
        return lazy

    def execute(self, sql: str, params: Any = None) -> PgCursor:
        statement = translate(sql, params is not None)
        if statement.ignore_unique:
            self.start()
            cursor: Any = self.raw.cursor()  # a ClientCursor (`connect`)
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
        if statement.deferrable and not self._autocommit:
            text = prepared_call(self.raw, statement, params)
            if text is None:
                text = (
                    self.binder.bind(statement.sql, params) if params is not None else statement.sql
                )
            lazy = PgCursor(None, 0, None)
            self._defer(text, lazy, statement.returns_id)
            return lazy
        executed = None if statement.writes else prepared_call(self.raw, statement, params)
        if self.reads_wait and statement.sql.lstrip()[:6].upper() == "SELECT":
            if executed is None and params is not None:
                executed = self.binder.bind(statement.sql, params)
            kind = _SEARCH if statement.searches and self.side is not None else _READ
            return self._wait(executed if executed is not None else statement.sql, kind)
        cursor = self.raw.cursor()
        if executed is not None:
            self._send(cursor, executed)
        else:
            self._send(cursor, statement.sql, params)
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
        if not batch:
            return PgCursor(None, 0, None)
        if statement.rows is not None:
            return self._insert_rows(statement.rows, batch)
        self.start()
        cursor = self.raw.cursor()
        sql_text = statement.sql
        if statement.returns_id:  # executemany has no lastrowid: no need for the id
            sql_text = sql_text.removesuffix(" RETURNING id")
        cursor.executemany(sql_text, batch)
        if statement.writes and cursor.rowcount != 0:
            self.changed = True
        return PgCursor(cursor, cursor.rowcount, None)

    def _insert_rows(self, shape: RowsInsert, batch: list[Any]) -> PgCursor:
        """One INSERT of many rows (a statement per MANY_ROWS rows, not per row: a turn's
        two dozen provenance rows cost 5-10 ms one by one), deferred like any write. Each
        row is bound client-side with the literals `ClientCursor` would write, a plain int as
        its digits: 0.08 ms for a turn's hundred provenance rows, where `mogrify` row by row
        took 0.37."""
        rows = _bound_rows(self.binder, shape.row, batch)
        if shape.key is not None:  # an upsert: the last row of a key wins
            latest: dict[tuple[Any, ...], str] = {}
            positions = shape.key_params
            if not all(isinstance(params, (tuple, list)) for params in batch):
                positions = None
            for text, params in zip(rows, batch, strict=True):
                if positions is not None:
                    key = tuple(params[i] for i in positions)
                else:  # parsing the bound text: slower (a vector's literal is 800 characters)
                    items = top_level_items(text)
                    key = tuple(items[i] for i in shape.key)
                latest.pop(key, None)
                latest[key] = text
            rows = list(latest.values())
        lazy = PgCursor(None, 0, None)
        for start in range(0, len(rows), MANY_ROWS):
            chunk = ", ".join(rows[start : start + MANY_ROWS])
            self._defer(shape.head + chunk + shape.tail, lazy, False)
        if self._autocommit:  # no transaction to send it with: now
            self.flush()
        return lazy


# Server-side prepared reads ------------------------------------------------------------------
#
# Planning a turn view's join costs the server 0.3-0.7 ms a statement, every time: the
# parameters are bound client-side (`ClientCursor`: SQLite's untyped parameters), so each
# call is a new text (and the same text is planned again: 0.03-0.13 ms for the view's
# reads with no parameters). A read seen on a connection is therefore PREPAREd there, once,
# with $n parameters typed from the values of that first call (`_KINDS`; one that was None then
# waits for a call that gives it a value: PostgreSQL types a parameter where it is first
# used, and `:person IS NOT NULL` says nothing); later calls send `EXECUTE name(literals)`,
# still bound client-side, and run its generic plan, planned once (`session_options`:
# `plan_cache_mode`). A call goes through EXECUTE only when each value means there what
# its literal meant (`_fits`); otherwise, and for a read PostgreSQL cannot prepare with
# those types or whose plan depends on its values (`_VALUE_PLANNED`), it is sent as before.

_SELECT_STAR = re.compile(r"\bSELECT\s+(?:\w+\.)?\*|,\s*\w+\.\*|\bRETURNING\s+\*", re.IGNORECASE)
# Reads whose best plan depends on the values stay planned with their literals: words
# (the newest matches of a common word by a backward walk of the ids, of a rare one through
# the GIN index: a generic plan walked a million rows for a rare word), patterns, and a
# parameter in a range or arithmetic (a time window: the generic plan of the guard's
# outgoing_log window scanned the table, 130 ms instead of 0.1 ms). One range is kept: an
# id bound of a read with a LIMIT (a conversation's messages before this one), which walks
# the ids in order whatever the bound.
_VALUE_PLANNED = re.compile(
    r"@@|\bLIKE\b|\bBETWEEN\b|(?:<=?|(?<!<)>=?|[-+*/])\s*\$\d|\$\d+\s*(?:<(?!>)|>|[-+*/])",
    re.IGNORECASE,
)
_ID_BOUND = re.compile(r"(?<![\w$])(?:\w+\.)?id\s*(?:<=?|>=?)\s*\$\d+", re.IGNORECASE)
_LIMIT = re.compile(r"\bLIMIT\b", re.IGNORECASE)


def _value_planned(text: str) -> bool:
    """Does the plan of `text` ($n parameters) depend on its values (`_VALUE_PLANNED`)?"""
    if _LIMIT.search(text):
        text = _ID_BOUND.sub("id = $0", text)
    return _VALUE_PLANNED.search(text) is not None


_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: a bool is an int too
    (int, "bigint"),
    (float, "double precision"),
    (str, "text"),
    (bytes, "bytea"),
)
_BIGINT = 2**63
_INTEGER = 2**31
# A write's parameter left untyped (its value was None) takes its column's type; these are
# the types `_fits` knows (any other: the write is not prepared).
_INFERRED = {kind for _, kind in _KINDS} | {"integer"}
_WRITE_HEADS = ("INSERT", "UPDATE", "DELETE")
MAX_PREPARED = 300  # reads prepared per connection (the stores have fewer distinct reads)


def _kind(value: Any) -> str | None:
    return next((kind for cls, kind in _KINDS if isinstance(value, cls)), None)


def _fits(value: Any, kind: str) -> bool:
    """Does `value`, bound as a literal, mean the same as a parameter of type `kind`?"""
    if value is None:
        return True
    if isinstance(value, bool):
        return kind == "boolean"
    if isinstance(value, int):
        return (
            (kind == "bigint" and -_BIGINT <= value < _BIGINT)
            or (kind == "integer" and -_INTEGER <= value < _INTEGER)
            or kind == "double precision"
        )
    return _kind(value) == kind


class PreparedRead:
    """One read PREPAREd on a connection: its name, its parameters' names in $n order
    (None: positional `%s`) and their types."""

    __slots__ = ("kinds", "name", "names")

    def __init__(self, name: str, names: list[str] | None, kinds: list[str]) -> None:
        self.name = name
        self.names = names
        self.kinds = kinds


class PreparedReads:
    """A connection's prepared reads (None: PostgreSQL would not prepare it), and the reads
    to prepare before its next call (`prepare_waiting`): PREPARE text, names, types."""

    def __init__(self) -> None:
        self.ready: dict[str, PreparedRead | None] = {}
        self.waiting: dict[str, tuple[str, list[str] | None, list[str]]] = {}
        self.stopped = False  # the server lost them once: this connection prepares no more


def stop_preparing(raw: Any) -> bool:
    """A prepared read was not found on the server (behind a pooler that hands each
    transaction another server connection, PgBouncer's transaction mode; or after a
    DEALLOCATE): no more EXECUTE on `raw`. False when it had already stopped."""
    reads = _PREPARED.get(raw)
    if reads is None or reads.stopped:
        return False
    reads.stopped = True
    reads.ready.clear()
    reads.waiting.clear()
    log.warning("memory (PostgreSQL): a prepared statement was lost; statements go unprepared")
    return True


_PREPARED: weakref.WeakKeyDictionary[Any, PreparedReads] = weakref.WeakKeyDictionary()


def _numbered(sql: str) -> tuple[str, list[str] | None, int] | None:
    """`sql` with psycopg's placeholders as $1, $2, … (a name used twice: one number) and
    its `%%` back to `%`; the names in number order (None if positional) and their count.
    None: psycopg would not read it so (`_template`)."""
    template = _template(sql)
    if template is None:
        return None
    pieces, keys = template
    numbers: dict[str | int, int] = {}
    parts = [pieces[0]]
    for key, piece in zip(keys, pieces[1:], strict=True):
        parts.append(f"${numbers.setdefault(key, len(numbers) + 1)}")
        parts.append(piece)
    names = [str(key) for key in numbers] if keys and isinstance(keys[0], str) else None
    return "".join(parts), names, len(numbers)


def _values(names: list[str] | None, count: int, params: Any) -> list[Any] | None:
    """The values of `params` in $n order (None: they do not match the placeholders)."""
    if names is None:
        values = None if isinstance(params, dict) else list(params)
    elif isinstance(params, dict) and all(name in params for name in names):
        values = [params[name] for name in names]
    else:
        values = None
    return values if values is not None and len(values) == count else None


def prepared_call(raw: Any, statement: Statement, params: Any) -> str | None:
    """`EXECUTE name(literals)` for this read or write on `raw` when it is prepared there
    and the values fit; None: send it as it is (and the first time, prepare it for the
    next)."""
    head = statement.sql.lstrip()[:6].upper()
    if head != "SELECT" and not (statement.writes and head.startswith(_WRITE_HEADS)):
        return None
    if params is None:  # a read with no parameters (the newest soul's id): planned once too
        if "%" in statement.sql:
            return None  # unbound, its literals' % are single, where `_numbered` wants %%
        params = ()
    reads = _PREPARED.get(raw)
    if reads is None:
        reads = _PREPARED[raw] = PreparedReads()
    if reads.stopped:
        return None
    read = reads.ready.get(statement.sql)
    if read is None:
        if statement.sql not in reads.ready and statement.sql not in reads.waiting:
            _wait_to_prepare(reads, statement.sql, params, write=head != "SELECT")
        return None
    values = _values(read.names, len(read.kinds), params)
    if values is None or not all(map(_fits, values, read.kinds)):
        return None
    if not values:
        return f"EXECUTE {read.name}"
    literal = binder(raw).literal
    return f"EXECUTE {read.name}({', '.join([literal(value) for value in values])})"


def _wait_to_prepare(reads: PreparedReads, sql: str, params: Any, *, write: bool) -> None:
    if len(reads.ready) + len(reads.waiting) >= MAX_PREPARED:
        return
    numbered = _numbered(sql)
    if numbered is None:
        reads.ready[sql] = None
        return
    text, names, count = numbered
    # SELECT *: a column added by a migration would change its prepared row type.
    if _SELECT_STAR.search(sql) or _value_planned(text):
        reads.ready[sql] = None
        return
    values = _values(names, count, params)
    if values is None:
        reads.ready[sql] = None
        return
    kinds = [_kind(value) for value in values]
    if any(kind is None and value is not None for kind, value in zip(kinds, values, strict=True)):
        reads.ready[sql] = None  # a value of a type not in _KINDS: sent as it is
        return
    typed = [kind for kind in kinds if kind is not None]
    if len(typed) == len(kinds):  # else a later call, with every value, prepares it
        reads.waiting[sql] = (text, names, typed)
    elif write:  # a column types what was None
        reads.waiting[sql] = (text, names, [kind or "unknown" for kind in kinds])


def prepare_waiting(raw: Any) -> None:
    """PREPARE the reads `raw` saw since its last call, outside any transaction (a read
    PostgreSQL will not prepare then costs nothing but its round trip): one round trip
    each, once per read and connection."""
    reads = _PREPARED.get(raw)
    if reads is None or not reads.waiting:
        return
    end_read(raw)
    waiting, reads.waiting = reads.waiting, {}
    cursor = raw.cursor()
    for sql, (text, names, kinds) in waiting.items():
        name = f"mirror_{len(reads.ready) + 1}"
        try:
            types = f" ({', '.join(kinds)})" if kinds else ""
            cursor.execute(f"PREPARE {name}{types} AS {text}")
            if "unknown" in kinds:  # what the columns made of them
                cursor.execute(
                    "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = %s",
                    (name,),
                )
                row = cursor.fetchone()
                inferred = list(row[0]) if row is not None else []
                if len(inferred) != len(kinds) or not set(inferred) <= _INFERRED:
                    cursor.execute(f"DEALLOCATE {name}")
                    reads.ready[sql] = None
                    continue
                kinds = inferred
        except psycopg.OperationalError as exc:  # found dead: no transaction began
            raise Stale(str(exc)) from exc
        except psycopg.Error as exc:
            log.debug("memory (PostgreSQL): not prepared (%s): %s", exc, text[:80])
            reads.ready[sql] = None
            continue
        reads.ready[sql] = PreparedRead(name, names, kinds)


def session_options(url: str) -> str:
    """The connection's `options`: the URL's, and `synchronous_commit=off`, `jit=off`,
    `plan_cache_mode=force_generic_plan` and `random_page_cost=1.1` unless the URL sets them.

    Why off: it is SQLite's `synchronous=NORMAL` (bot/memory/schema.py), the durability
    MirrorOS already ships: a commit survives the crash of any MirrorOS process (the
    server has it: the durability crash matrix holds), and only a crash of the database
    server itself can lose the last moments of commits (at most 3 x wal_writer_delay,
    0.6 s by default; never a torn or half transaction). In exchange no commit waits for
    a WAL flush (1.3 ms per fdatasync on this host's disk; three per turn). A memory that
    must survive the server's crash too says so in its URL:
    `?options=-c%20synchronous_commit%3Don`.

    Why no JIT: the stores' statements read a few rows through indexes, but the planner's
    estimate for some is far larger (the turn view's newest messages per instance: 333 333
    rows estimated, 20 read), and above `jit_above_cost` PostgreSQL compiles the query
    before running it: 10 ms of JIT for 0.3 ms of execution, in every turn at 1M
    messages.

    Why generic plans: the only prepared statements are `prepared_call`'s reads, keyed
    lookups and index ranges whose plan does not change with the values (those whose plan
    does are not prepared). Left to choose (`auto`), the server kept planning them anew
    (its default estimates make a generic plan look dearer), 0.3-0.7 ms each a call.

    Why random_page_cost 1.1: PostgreSQL's default, 4, prices a page read out of order as
    a disk seek, while the pages a turn reads stay cached (a memory's working set is
    small), where such a read costs about what one in order does. At 4, fetching a word's
    few hundred matches through the GIN index looked dearer than walking the ids backwards
    until enough of them turn up, and when the audience may see few of them that walk read
    59 000 rows (18 ms). Measured on 300 word recalls at 1M messages, twice each: the
    slowest 16.9-17.4 ms -> 7.2-8.2 ms, the mean 1.20-1.43 -> 1.08-1.37 ms, the median the
    same."""
    from psycopg.conninfo import conninfo_to_dict

    given = str(conninfo_to_dict(url).get("options") or "")
    options = [] if "synchronous_commit" in given else ["-c synchronous_commit=off"]
    for name, value in (
        ("jit", "off"),
        ("plan_cache_mode", "force_generic_plan"),
        ("random_page_cost", "1.1"),
    ):
        if not re.search(rf"\b{name}\s*=", given):
            options.append(f"-c {name}={value}")
    return " ".join([given, *options]).strip()


def connect(url: str, application: str = "mirroros") -> psycopg.Connection[Any]:
    try:
        raw: psycopg.Connection[Any] = GreenConnection.connect(
            url,
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
            # Our own PREPAREs (`PreparedRead`); psycopg's would count every text it sends
            # (ours are bound client-side: nearly every one is new) in an LRU for nothing.
            prepare_threshold=None,
            row_factory=_row_factory,
            application_name=application,
            connect_timeout=10,
            options=session_options(url),
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
                apply_planner_file(cursor)
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


def apply_planner_file(cursor: Any, path: Path = PLANNER_FILE) -> None:
    """schema/postgresql/planner.sql (PostgreSQL-only indexes), when its text is new to this
    database; inside migrate's transaction, under the write lock."""
    text = path.read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode()).hexdigest()
    cursor.execute("SELECT to_regclass('schema_engine') IS NOT NULL")
    row = cursor.fetchone()
    if row and row[0]:
        cursor.execute("SELECT sha256 FROM schema_engine WHERE name = %s", (path.name,))
        applied = cursor.fetchone()
        if applied is not None and applied[0] == digest:
            return
    else:
        cursor.execute(
            "CREATE TABLE schema_engine (name text PRIMARY KEY, sha256 text NOT NULL,"
            " applied_at double precision NOT NULL)"
        )
    cursor.execute(text)
    cursor.execute(
        "INSERT INTO schema_engine (name, sha256, applied_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256,"
        " applied_at = excluded.applied_at",
        (path.name, digest, time.time()),
    )
    log.info("memory (PostgreSQL): applied %s", path.name)


def schema_version(raw: psycopg.Connection[Any]) -> int:
    cursor = raw.cursor()
    cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = cursor.fetchone()
    if not row or not row[0]:
        return 0
    cursor.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    found = cursor.fetchone()
    return int(found[0]) if found else 0


# Transactions, one at a time on a connection ------------------------------------------------


class Stale(Exception):
    """The connection was found dead before a transaction did anything: connect again and
    run it again (nothing of it reached the server)."""


def write_in(raw: psycopg.Connection[Any], fn: Callable[..., T], *args: Any) -> T:
    """fn(conn, *args) in one write transaction under the write lock; NOTIFY when it wrote."""
    for attempt in range(5):
        conn = PgConnection(
            raw, f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK[0]}, {WRITE_LOCK[1]})"
        )
        take_ring()  # only this attempt's rows ring the outbox bell
        try:
            result = fn(conn, *args)
            conn.drop_waiting_reads()  # issued, never consumed: not sent
            if not conn.begun and not conn.deferred:  # nothing was asked: nothing to end
                return result
            # The deferred writes, NOTIFY and COMMIT: one message. Whether a deferred
            # write changed a row is known only once it ran: the server knows it then (a
            # transaction that changed a row has an id; the advisory lock gives none).
            # Rows queued for the couriers: the NOTIFY says so (the outbox bell).
            if take_ring():
                conn.finish(f"SELECT pg_notify('{CHANNEL}', '{OUTBOX_RUNG}'); COMMIT")
            elif conn.changed:
                conn.finish(f"SELECT pg_notify('{CHANNEL}', ''); COMMIT")
            elif conn.deferred:
                conn.finish(f"{NOTIFY_IF_WRITTEN}; COMMIT")
            else:
                conn.finish("COMMIT")
            return result
        except RETRY_ERRORS:
            _rollback(raw)
            if attempt == 4:
                raise
            pg_green.pause(0.01 * (attempt + 1))
        except pg_errors.InvalidSqlStatementName:
            _rollback(raw)  # nothing of it was committed: run it again, unprepared
            if not stop_preparing(raw):
                raise
        except BaseException:
            _rollback(raw)
            raise
    raise AssertionError("unreachable")


def read_in(
    raw: psycopg.Connection[Any],
    fn: Callable[..., T],
    *args: Any,
    side: SideLine | None = None,
) -> T:
    """fn(conn, *args) in one REPEATABLE READ, READ ONLY transaction (a consistent snapshot);
    a word search among its reads may run on `side` meanwhile (`SideLine`).

    Its COMMIT is not a round trip of its own: the transaction is left open (it holds
    nothing but its snapshot) and ends with the next read's message (`COMMIT; BEGIN …;
    SELECT …`), or by `end_read` when the connection stays idle (`READ_LINGER_S`)."""
    while True:
        lingering = raw.info.transaction_status == _IN_TRANSACTION
        conn = PgConnection(raw, f"COMMIT; {READ_BEGIN}" if lingering else READ_BEGIN, side)
        try:
            result = fn(conn, *args)
            conn.drop_waiting_reads()  # issued, never consumed: not sent
            if conn.deferred:  # a write in a read: the server refuses it at its COMMIT
                conn.finish("COMMIT")
            return result
        except pg_errors.InvalidSqlStatementName:
            _rollback(raw)
            if not stop_preparing(raw):
                raise
        except BaseException:
            _rollback(raw)
            raise


def end_read(raw: psycopg.Connection[Any] | None) -> None:
    """End the read transaction `read_in` left open, if any."""
    if raw is None or raw.closed or raw.broken:
        return
    if raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        try:
            raw.cursor().execute("COMMIT")
        except psycopg.Error:  # a broken connection: the next call connects again
            pass


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


class SideLine:
    """A reader's second connection, with a thread of its own, where one word search of
    each of the reader's messages runs meanwhile (`PgConnection._send`).

    Why: the word searches over messages and over notes are most of the server's work in
    a turn (about half of the turn view's message at 1M messages; bench/pg.py), and one
    connection runs its statements one after another. The search over messages, issued
    first, runs here while the reader runs the rest (the notes search among them): on a
    2-core host the server works on both at once (measured at 1M messages: the turn's
    context part 0.3-0.45 ms shorter at p50, of 3.7-4.2).

    The search runs in a snapshot of its own, taken as the reader's is: both begin after
    the read was called, so each sees every commit made before it, and they differ at most
    by a commit landing while the view is read, which the turn cannot tell from a commit a
    moment later. A search's rows say nothing about the view's other rows (each row's
    visibility is decided in its own SQL, from the row), so nothing the view puts together
    depends on the two snapshots being one. Sharing one exactly (`pg_export_snapshot`)
    costs a round trip first (0.29 ms measured): the context part was then only 0.16 ms
    shorter.

    Connected in the background on first use (meanwhile the reader runs its searches
    itself); a search that fails here is read by the reader, and the line connects again
    on the next one."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.raw: psycopg.Connection[Any] | None = None
        self._connecting = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mirror-pg-{name}")

    def read(self, text: str) -> Future[_Rows] | None:
        """Run the read `text` here (its rows and rowcount); None while not connected."""
        raw = self.raw
        if raw is None or raw.closed or raw.broken:
            if not self._connecting:
                self._connecting = True
                with contextlib.suppress(RuntimeError):  # closing
                    self._thread.submit(self._connect)
            return None
        try:
            return self._thread.submit(self._read, raw, text)
        except RuntimeError:  # closing: the reader reads it
            return None

    def _connect(self) -> None:
        try:
            if self.raw is not None:
                _close_broken(self.raw)
            self.raw = connect(self.url, f"mirroros-{self.name}")
        except MemoryUnavailable as exc:
            log.warning("memory (PostgreSQL): %s", exc)
        finally:
            self._connecting = False

    @staticmethod
    def _read(raw: psycopg.Connection[Any], text: str) -> _Rows:
        cursor = raw.cursor()
        cursor.execute(text)
        return (cursor.fetchall() if returns_rows(cursor) else [], cursor.rowcount)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._thread.shutdown)  # after what it was doing
        raw, self.raw = self.raw, None
        if raw is not None:
            await loop.run_in_executor(None, raw.close)


class Worker:
    """One psycopg connection; its calls run one at a time, each in a greenlet on the event
    loop's thread (bot/memory/pg_green.py; a reader's word searches on its `side` line)."""

    def __init__(self, url: str, name: str, *, side: bool = False) -> None:
        self.url = url
        self.name = name
        self.raw: psycopg.Connection[Any] | None = None
        self.side = SideLine(url, f"{name}-side") if side else None
        self._calls = 0
        self._lock = asyncio.Lock()  # one call at a time (pg_green: the connection's lock)
        self._idle: asyncio.Task[None] | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            try:
                return await pg_green.run(self._run, fn, args)
            except BaseException:
                raw = self.raw  # stopped in the middle of a statement (the loop closing)?
                if raw is not None and raw.pgconn.transaction_status == _ACTIVE:
                    _close_broken(raw)  # unusable: the next call connects again
                raise

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        for attempt in (1, 2):
            if self.raw is None or self.raw.closed or self.raw.broken:
                if self.raw is not None:
                    log.warning("memory (PostgreSQL): %s connection lost; reconnecting", self.name)
                self.raw = pg_green.blocking(connect, self.url, f"mirroros-{self.name}")
            if fn is not read_in:  # anything else starts outside a lingering read
                end_read(self.raw)
            try:
                prepare_waiting(self.raw)
                if fn is read_in:
                    return read_in(self.raw, *args, side=self.side)
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

    def end_read_when_idle(self) -> None:
        """End the read `read_in` left open unless another call comes within READ_LINGER_S
        (off every awaited path)."""
        self._calls += 1
        seen = self._calls
        loop = asyncio.get_running_loop()

        def idle() -> None:
            if self._calls == seen and self.raw is not None:
                self._idle = loop.create_task(self._end_idle_read(seen))

        loop.call_later(READ_LINGER_S, idle)

    async def _end_idle_read(self, seen: int) -> None:
        async with self._lock:
            if self._calls == seen and self.raw is not None:
                await pg_green.run(end_read, self.raw)

    async def close(self) -> None:
        async with self._lock:
            raw, self.raw = self.raw, None
            if raw is not None:
                raw.close()
        if self.side is not None:
            await self.side.close()


class Listener:
    """LISTEN on `CHANNEL` in a thread of its own; counts notifications (the data version)
    and, among them, the outbox bell's (`rings`).

    `version` is None while not listening (pollers then check every time). After a
    (re)connection both move on by themselves: whatever was committed while nobody
    listened is read again by every poller that watches it.

    Why a thread and not the event loop: psycopg's async wait registers the socket with
    the loop and arms a timer for each notification, and wakes the loop ten times a second
    while idle; a turn's own commits notify while it is under way. Here the thread sleeps
    in `poll` (no wake-up while idle) and bumps `version` without the loop: the loop
    hears only of rings and of a change someone waits for (`on_change`).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.version: int | None = None
        self.rings = 0  # counted on the loop (`_rang`)
        self.connected = asyncio.Event()
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self.on_change: list[Callable[[], None]] = []  # at each notification (on the loop)
        self.on_ring: list[Callable[[], None]] = []  # at each of the outbox bell's

    def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._wake_r, self._wake_w = os.pipe()
            self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = psycopg.connect(
                    self.url,
                    autocommit=True,
                    application_name="mirroros-listen",
                    connect_timeout=10,
                )
                conn.execute(f"LISTEN {CHANNEL}")
                backoff = 0.1
                self._heard(ring=True)
                self._on_loop(self.connected.set)
                self._listen(conn.pgconn)
            except (psycopg.Error, OSError) as exc:
                if not self._stopping.is_set():
                    log.warning("memory (PostgreSQL): LISTEN connection lost (%s); again", exc)
            finally:
                self.version = None
                self._on_loop(self.connected.clear)
                if conn is not None:
                    with contextlib.suppress(psycopg.Error, OSError):
                        conn.close()
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _listen(self, pgconn: Any) -> None:
        """Until stopped: wait for the socket, take what came (raises when it is lost)."""
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            if any(fd == self._wake_r for fd, _ in poller.poll()):
                return
            pgconn.consume_input()
            while (heard := pgconn.notifies()) is not None:
                self._heard(ring=heard.extra == _OUTBOX_RUNG_BYTES)

    def _heard(self, *, ring: bool) -> None:
        self._count += 1
        self.version = self._count
        if self.on_change:
            self._on_loop(self._changed)
        if ring:  # on the loop, so that a wait's look at `rings` and its callback agree
            self._on_loop(self._rang)

    def _on_loop(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback)

    def _changed(self) -> None:
        for callback in list(self.on_change):
            callback()

    def _rang(self) -> None:
        self.rings += 1
        for callback in list(self.on_ring):
            callback()

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        # Woken first, then told to stop: until `_stopping` is set the thread cannot end,
        # so the pipe (which it closes as it ends) is still open for this write.
        os.write(self._wake_w, b"x")
        self._stopping.set()
        # One still connecting gives up within connect_timeout (and is a daemon).
        await asyncio.to_thread(thread.join, 10)


class PgDatabase:
    """The PostgreSQL side of `Database`: what it does with a `postgresql://` location."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.writer = Worker(url, "writer")
        self.reader = Worker(url, "reader", side=True)
        self.listener = Listener(url)
        self._rings_seen = 0  # the listener's `rings` at the end of the last outbox wait
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
        try:
            return await self.reader.call(read_in, fn, *args)
        finally:
            self.reader.end_read_when_idle()

    def data_version_now(self) -> int | None:
        self.listener.start()
        return self.listener.version

    async def wait_for_outbox(self, timeout_s: float) -> None:
        """Return at the outbox bell's next NOTIFY (at once if one came since the last
        wait), or after `timeout_s` at the latest."""
        self.listener.start()
        if self.listener.rings == self._rings_seen:
            heard = asyncio.Event()
            self.listener.on_ring.append(heard.set)
            try:
                await wait_event(heard, timeout_s)
            finally:
                self.listener.on_ring.remove(heard.set)
        self._rings_seen = self.listener.rings

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
        if not await wait_event(self.listener.connected, wait_s):
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
            await wait_event(heard, wait_s)
            return time.monotonic() - started if self.listener.version != before else None
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
