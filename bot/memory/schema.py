"""Opening memory.db, without asyncio: pragmas, the numbered schema files, migration.

Plain sqlite3 only, so that a short command (`mirror status`) can open the database without
importing asyncio, aiosqlite or the stores; `bot.memory.database` builds on it.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"
AUTOCHECKPOINT_PAGES = 10_000  # SQLite's own checkpoint (in a commit) only past ~40 MB


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


def configure(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        log.warning("memory.db journal mode is %s, not WAL", mode)
    # WAL defaults to synchronous=FULL here; NORMAL is durable across a process crash and
    # commits about 4x faster.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")


def migrate(conn: sqlite3.Connection, files: list[tuple[int, Path]]) -> int:
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
