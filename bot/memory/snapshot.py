"""What `mirror status` shows, read with plain sqlite3 (no asyncio, no aiosqlite, no stores).

`status_in` is the one query of the status (a running process reaches it through
`Memory.status`); `read_status` opens the database like `Memory.open` does (pragmas,
pending migrations) and reads it, for a command that should start in a blink.
`read_status_lines` reads the same into plain tuples (`StatusLines`), without importing
pydantic or the models: what the text of `mirror status` prints, at half its start-up cost.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from bot.memory.schema import MemoryUnavailable, configure, migrate, schema_files

if TYPE_CHECKING:
    from bot.models import Status

T = TypeVar("T")

_COUNTS = (
    "SELECT"
    " (SELECT count(*) FROM messages) AS messages,"
    " (SELECT count(*) FROM intentions WHERE status IN ('open', 'conflicted'))"
    "   AS open_intentions,"
    " (SELECT count(*) FROM conflicts WHERE status IN ('open', 'surfaced'))"
    "   AS open_conflicts,"
    " (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending'))"
    "   AS pending_outbox"
)
_SOUL = "SELECT * FROM soul_versions ORDER BY id DESC LIMIT 1"
_INSTANCES = "SELECT * FROM instances ORDER BY id"


def _shown(path: Path | str) -> str:
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", str(path))  # no password


def status_in(
    conn: sqlite3.Connection,
    now: float,
    dead_after_s: float,
    path: Path | str,
    schema_version: int,
) -> Status:
    """Counts, the active soul and the instances, from one read transaction."""
    from bot.memory import rows
    from bot.models import Status

    counts = conn.execute(_COUNTS).fetchone()
    soul = conn.execute(_SOUL).fetchone()
    instances = [rows.instance(row) for row in conn.execute(_INSTANCES)]
    alive = {
        item.id: item.status == "alive" and now - item.last_seen.timestamp() < dead_after_s
        for item in instances
    }
    return Status(
        memory_path=_shown(path),
        schema_version=schema_version,
        soul=rows.soul_version(soul) if soul else None,
        instances=instances,
        alive=alive,
        messages=counts["messages"],
        open_intentions=counts["open_intentions"],
        open_conflicts=counts["open_conflicts"],
        pending_outbox=counts["pending_outbox"],
    )


class SoulLine(NamedTuple):
    id: int
    name: str
    sha256: str


class InstanceLine(NamedTuple):
    id: str
    entrance: str
    host: str
    pid: int
    last_seen: datetime
    status: str


class StatusLines(NamedTuple):
    """What the text of `mirror status` shows: the fields of `bot.models.Status` it reads,
    with the same names and values."""

    memory_path: str
    schema_version: int
    soul: SoulLine | None
    instances: list[InstanceLine]
    alive: dict[str, bool]
    messages: int
    open_intentions: int
    open_conflicts: int
    pending_outbox: int


def status_lines_in(
    conn: sqlite3.Connection,
    now: float,
    dead_after_s: float,
    path: Path | str,
    schema_version: int,
) -> StatusLines:
    """`status_in`, as plain tuples."""
    counts = conn.execute(_COUNTS).fetchone()
    soul = conn.execute(_SOUL).fetchone()
    instances = [
        InstanceLine(
            id=row["id"],
            entrance=row["entrance"],
            host=row["host"],
            pid=row["pid"],
            last_seen=datetime.fromtimestamp(row["last_seen"], UTC),  # as bot.models does
            status=row["status"],
        )
        for row in conn.execute(_INSTANCES)
    ]
    return StatusLines(
        memory_path=_shown(path),
        schema_version=schema_version,
        soul=SoulLine(soul["id"], soul["name"], soul["sha256"]) if soul else None,
        instances=instances,
        alive={
            item.id: item.status == "alive" and now - item.last_seen.timestamp() < dead_after_s
            for item in instances
        },
        messages=counts["messages"],
        open_intentions=counts["open_intentions"],
        open_conflicts=counts["open_conflicts"],
        pending_outbox=counts["pending_outbox"],
    )


def _is_url(path: Path | str) -> bool:
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


def read_status(path: Path | str, dead_after_s: float, *, busy_timeout_ms: int = 5000) -> Status:
    """Open memory.db as a process would (creating and migrating it) and read its status."""
    if _is_url(path):
        return _read_status_pg(str(path), dead_after_s)
    return _read_sqlite(Path(path), busy_timeout_ms, dead_after_s, status_in)


def read_status_lines(
    path: Path | str, dead_after_s: float, *, busy_timeout_ms: int = 5000
) -> StatusLines | Status:
    """`read_status` as `StatusLines` (on PostgreSQL: the `Status`, which has the same
    fields: psycopg and pydantic weigh alike there)."""
    if _is_url(path):
        return _read_status_pg(str(path), dead_after_s)
    return _read_sqlite(Path(path), busy_timeout_ms, dead_after_s, status_lines_in)


def _read_sqlite(
    path: Path,
    busy_timeout_ms: int,
    dead_after_s: float,
    read: Callable[[sqlite3.Connection, float, float, Path, int], T],
) -> T:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise MemoryUnavailable(f"cannot open {path}: {exc}") from None
    try:
        configure(conn, busy_timeout_ms)
        version = migrate(conn, schema_files())
        conn.execute("BEGIN")
        try:
            return read(conn, time.time(), dead_after_s, path, version)
        finally:
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise MemoryUnavailable(f"cannot open {path}: {exc}") from None
    finally:
        conn.close()


def _read_status_pg(url: str, dead_after_s: float) -> Status:
    """`read_status` on PostgreSQL: one connection, migrations, one snapshot (psycopg is
    imported only for such a memory)."""
    from bot.memory import pg_engine

    raw = pg_engine.connect(url, application="mirroros-status")
    try:
        version = pg_engine.migrate(raw, pg_engine.schema_files())
        return pg_engine.read_in(
            raw,
            lambda conn: status_in(conn, time.time(), dead_after_s, url, version),
        )
    finally:
        raw.close()
