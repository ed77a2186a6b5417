"""Copying a whole memory between engines: SQLite → empty PostgreSQL, and back.

`copy_memory(source, target)` opens both (migrating each to the latest schema, as a process
would), refuses a target that holds any row, and copies every table in one transaction on
the target, parents before children and ids kept (PostgreSQL's identity sequences are then
moved past them). Tables kept by triggers (outgoing_log, usage_daily) are copied as they
are, after the rows whose triggers filled them. The result is verified: the row count and
a checksum (sha256 of every row in primary-key order, values normalised so that SQLite's
REAL 5.0 and PostgreSQL's 5 agree) of each table on both sides. Soul history, audit and
provenance are tables like the others: nothing is left behind.

The catalog (tables, columns, keys, parents) is read from the SQLite schema files applied
to an in-memory database, the one description both engines mirror. Plain sqlite3 and
psycopg, no event loop: `mirror memory migrate` and `Memory.backup` on PostgreSQL call it
from a thread.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.memory.schema import MemoryDbError, configure, migrate, schema_files, split_statements

BATCH = 2000
BULK_ROWS = 20_000  # a PostgreSQL table this big gets its indexes rebuilt after the copy
DERIVED = ("outgoing_log", "usage_daily")  # filled by triggers as rows are copied

Progress = Callable[[str, int, int], None]  # (table, rows copied so far, rows in table)


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[str]
    key: list[str]
    has_id: bool  # an identity `id` column (a sequence to move on PostgreSQL)


@dataclass(frozen=True)
class TableReport:
    name: str
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


class CopyError(MemoryDbError):
    pass


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def catalog() -> list[Table]:
    """Every table of the schema, parents first (derived tables last)."""
    conn = sqlite3.connect(":memory:")
    try:
        for _, path in schema_files():
            for statement in split_statements(path.read_text(encoding="utf-8")):
                conn.execute(statement)
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND sql NOT LIKE 'CREATE VIRTUAL%' AND name NOT LIKE '%\\_fts\\_%' ESCAPE '\\'"
                " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
            )
        ]
        tables: dict[str, Table] = {}
        parents: dict[str, set[str]] = {}
        for name in names:
            info = conn.execute(f"PRAGMA table_info({name})").fetchall()
            columns = [row[1] for row in info]
            key = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5] > 0]
            integer_key = key == ["id"] and any(
                row[1] == "id" and row[2].upper() == "INTEGER" for row in info
            )
            tables[name] = Table(name, columns, key or columns, integer_key)
            parents[name] = {row[2] for row in conn.execute(f"PRAGMA foreign_key_list({name})")} - {
                name
            }
    finally:
        conn.close()
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for parent in sorted(parents[name]):
            visit(parent)
        ordered.append(name)

    for name in sorted(tables):
        if name not in DERIVED:
            visit(name)
    ordered += [name for name in DERIVED if name in tables]
    return [tables[name] for name in ordered]


def _canonical(value: Any) -> bytes:
    if value is None:
        return b"N"
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return b"i%d" % value
    if isinstance(value, float):
        return b"f" + repr(value).encode()
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return b"b" + value.hex().encode()
    return b"s" + str(value).encode("utf-8", "surrogatepass")


class Checksum:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.rows = 0

    def add(self, row: Iterable[Any]) -> None:
        self.digest.update(b"\x1e".join(_canonical(value) for value in row) + b"\x1d")
        self.rows += 1

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


# One side of a copy -----------------------------------------------------------------------


class Side:
    """A memory opened for copying: SQLite file or PostgreSQL database."""

    def __init__(self, location: str | Path) -> None:
        self.location = location
        self.pg = is_url(location)
        self.conn: Any = None

    def open(self) -> None:
        if self.pg:
            import psycopg

            from bot.memory import pg_engine

            try:
                self.conn = psycopg.connect(str(self.location), autocommit=True)
            except psycopg.Error as exc:
                raise CopyError(
                    f"cannot connect to {pg_engine.redact(str(self.location))}: {exc}"
                ) from None
            pg_engine.migrate(self.conn, pg_engine.schema_files())
        else:
            path = Path(self.location)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None)
            configure(self.conn, 5000)
            self.conn.row_factory = None
            migrate(self.conn, schema_files())

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        if self.pg:
            self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT" if not self.pg else "ROLLBACK")

    def count(self, table: Table) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()
        return int(row[0])

    def rows(self, table: Table) -> Iterator[tuple[Any, ...]]:
        sql = f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {', '.join(table.key)}"
        if self.pg:
            with self.conn.cursor(name=f"copy_{table.name}") as cursor:
                cursor.itersize = BATCH
                cursor.execute(sql)
                yield from cursor
        else:
            cursor = self.conn.execute(sql)
            while batch := cursor.fetchmany(BATCH):
                yield from batch

    def checksum(self, table: Table) -> Checksum:
        found = Checksum()
        for row in self.rows(table):
            found.add(row)
        return found


class Target(Side):
    def begin(self) -> None:
        if self.pg:
            from bot.memory.pg_engine import WRITE_LOCK

            self.conn.execute("BEGIN")
            self.conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", WRITE_LOCK)
        else:
            self.conn.execute("PRAGMA foreign_keys = OFF")
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.pg:
            from bot.memory.pg_engine import CHANNEL

            self.conn.execute(f"SELECT pg_notify('{CHANNEL}', 'migrate')")
        self.conn.execute("COMMIT")
        if not self.pg:
            self.conn.execute("PRAGMA foreign_keys = ON")

    def rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except Exception:  # the error being reported matters more
            pass

    def write(self, table: Table, batch: list[tuple[Any, ...]]) -> None:
        columns = ", ".join(table.columns)
        if self.pg:
            with self.conn.cursor().copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                for row in batch:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(table.columns))
            self.conn.executemany(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", batch)

    def prepare(self, table: Table, rows: int) -> list[str] | None:
        """Before a big table's rows: drop its plain indexes (PostgreSQL rebuilds them in
        bulk after, several times faster than row by row, the GIN index above all) and its
        triggers (the derived tables are copied as they are); what `finish` restores."""
        if not self.pg or rows < BULK_ROWS:
            return None
        found = self.conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i"
            " WHERE i.schemaname = current_schema() AND i.tablename = %s"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            (table.name,),
        ).fetchall()
        self.conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        self.conn.execute(f"ALTER TABLE {table.name} DISABLE TRIGGER USER")
        for name, _ in found:
            self.conn.execute(f"DROP INDEX {name}")
        return [definition for _, definition in found]

    def finish(self, table: Table, indexes: list[str] | None) -> None:
        if indexes is None:
            return
        for definition in indexes:
            self.conn.execute(definition)
        self.conn.execute(f"ALTER TABLE {table.name} ENABLE TRIGGER USER")

    def analyze(self) -> None:
        """PostgreSQL plans by statistics, which a bulk load leaves empty until autovacuum
        comes by: without them the first turns' joins are planned blind (tens of ms).
        VACUUM as well: it marks the copied pages all-visible (index-only scans, no hint
        bits written by the first readers) and clears the rows the derived tables' clearing
        left dead (a 1M-message copy left `outgoing_log` 1 800 rows in 38 MB: its sequential
        scan cost 10-15 ms a turn until autovacuum came). SQLite's plans are pinned by the
        stores (INDEXED BY) and need none."""
        if self.pg:
            self.conn.execute("VACUUM (ANALYZE)")

    def clear(self, table: Table) -> None:
        self.conn.execute(f"DELETE FROM {table.name}")

    def move_sequence(self, table: Table) -> None:
        if self.pg and table.has_id:
            self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                f" (SELECT max(id) FROM {table.name}))"
                f" WHERE EXISTS (SELECT 1 FROM {table.name})"
            )


def copy_memory(
    source: str | Path, target: str | Path, *, progress: Progress | None = None
) -> list[TableReport]:
    """Copy every row of `source` into the empty memory at `target`; verify each table.

    Raises CopyError when the target holds rows, or when a table's count or checksum
    differs after the copy (the copy is committed by then: the report says where)."""
    if str(source) == str(target):
        raise CopyError("source and target are the same memory")
    tables = catalog()
    src, dst = Side(source), Target(target)
    try:
        src.open()
        dst.open()
        busy = [table.name for table in tables if dst.count(table)]
        if busy:
            raise CopyError(f"the target is not empty (rows in {', '.join(busy[:5])})")
        sums: dict[str, Checksum] = {}
        with src.snapshot():
            totals = {table.name: src.count(table) for table in tables}
            dst.begin()
            try:
                for table in tables:
                    if table.name in DERIVED:
                        dst.clear(table)
                    indexes = dst.prepare(table, totals[table.name])
                    found = Checksum()
                    batch: list[tuple[Any, ...]] = []
                    for row in src.rows(table):
                        found.add(row)
                        batch.append(tuple(row))
                        if len(batch) >= BATCH:
                            dst.write(table, batch)
                            batch = []
                            if progress is not None:
                                progress(table.name, found.rows, totals[table.name])
                    if batch:
                        dst.write(table, batch)
                    if progress is not None:
                        progress(table.name, found.rows, totals[table.name])
                    dst.finish(table, indexes)
                    dst.move_sequence(table)
                    sums[table.name] = found
                dst.commit()
            except BaseException:
                dst.rollback()
                raise
        reports = []
        with dst.snapshot():
            for table in tables:
                copied = dst.checksum(table)
                reports.append(
                    TableReport(
                        table.name,
                        sums[table.name].rows,
                        copied.rows,
                        sums[table.name].hexdigest(),
                        copied.hexdigest(),
                    )
                )
        dst.analyze()
        bad = [report.name for report in reports if not report.ok]
        if bad:
            raise CopyError(f"copied, but these tables differ: {', '.join(bad)}")
        return reports
    finally:
        src.close()
        dst.close()


def checksums(location: str | Path) -> dict[str, tuple[int, str]]:
    """(rows, checksum) of every table of a memory, as `copy_memory` verifies them."""
    side = Side(location)
    try:
        side.open()
        with side.snapshot():
            found = {}
            for table in catalog():
                total = side.checksum(table)
                found[table.name] = (total.rows, total.hexdigest())
            return found
    finally:
        side.close()
