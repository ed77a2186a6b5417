"""What `mirror status` shows, read with plain sqlite3 (no asyncio, no aiosqlite, no stores).

`status_in` is the one query of the status (a running process reaches it through
`Memory.status`); `read_status` opens the database like `Memory.open` does (pragmas,
pending migrations) and reads it, for a command that should start in a blink.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from bot.memory import rows
from bot.memory.schema import MemoryUnavailable, configure, migrate, schema_files
from bot.models import Status


def status_in(
    conn: sqlite3.Connection,
    now: float,
    dead_after_s: float,
    path: Path | str,
    schema_version: int,
) -> Status:
    """Counts, the active soul and the instances, from one read transaction."""
    counts = conn.execute(
        "SELECT"
        " (SELECT count(*) FROM messages) AS messages,"
        " (SELECT count(*) FROM intentions WHERE status IN ('open', 'conflicted'))"
        "   AS open_intentions,"
        " (SELECT count(*) FROM conflicts WHERE status IN ('open', 'surfaced'))"
        "   AS open_conflicts,"
        " (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending'))"
        "   AS pending_outbox"
    ).fetchone()
    soul = conn.execute("SELECT * FROM soul_versions ORDER BY id DESC LIMIT 1").fetchone()
    instances = [rows.instance(row) for row in conn.execute("SELECT * FROM instances ORDER BY id")]
    alive = {
        item.id: item.status == "alive" and now - item.last_seen.timestamp() < dead_after_s
        for item in instances
    }
    return Status(
        memory_path=re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", str(path)),  # no password
        schema_version=schema_version,
        soul=rows.soul_version(soul) if soul else None,
        instances=instances,
        alive=alive,
        messages=counts["messages"],
        open_intentions=counts["open_intentions"],
        open_conflicts=counts["open_conflicts"],
        pending_outbox=counts["pending_outbox"],
    )


def read_status(path: Path | str, dead_after_s: float, *, busy_timeout_ms: int = 5000) -> Status:
    """Open memory.db as a process would (creating and migrating it) and read its status."""
    if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
        return _read_status_pg(path, dead_after_s)
    path = Path(path)
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
            return status_in(conn, time.time(), dead_after_s, path, version)
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
