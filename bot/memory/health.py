"""The health of memory.db as `mirror doctor` sees it, read with plain sqlite3.

`read_health` opens the database WITHOUT creating or migrating it (a check must not change
what it checks): can it be opened and written, is its schema the latest, does `PRAGMA
quick_check` pass, how much disk is free, which soul is active, who holds the leases, and
whether memory knows a private conversation with the coordinator. It never raises for a
broken database: every problem is a field of the returned `MemoryHealth`. Kept apart from
the stores so that another memory engine can answer the same question its own way.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from bot.memory.schema import schema_files


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 only checks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


@dataclass(frozen=True)
class LeaseHolder:
    name: str
    holder: str
    host: str
    pid: int
    expires_at: float
    running: bool | None  # is its process alive (None: on another host, unknowable here)


@dataclass(frozen=True)
class MemoryHealth:
    path: Path
    exists: bool
    opened: bool = False
    problem: str | None = None  # why it cannot be opened (or its folder cannot be created)
    writable: bool = False
    write_problem: str | None = None
    schema_version: int = 0
    schema_latest: int = 0
    quick_check: str = ""  # "ok", or SQLite's first complaint
    free_bytes: int | None = None
    soul_version: int | None = None
    soul_sha256: str | None = None
    leases: list[LeaseHolder] = field(default_factory=list)
    coordinator_dm: bool | None = None  # None: not asked (or not readable)
    # "sqlite": everything above was read. Another engine (PostgreSQL) is not read here yet:
    # its own health check belongs beside it.
    engine: str = "sqlite"


def _free_bytes(path: Path) -> int | None:
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def _folder_writable(path: Path) -> str | None:
    """Why a new memory.db could not be made at `path` (None: it could)."""
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is not a folder"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable"
            return None
    return f"no folder of {path} exists"


def read_health(
    path: Path | str,
    *,
    busy_timeout_ms: int = 5000,
    coordinator: tuple[str, str] | None = None,
) -> MemoryHealth:
    """Everything `mirror doctor` asks memory.db, in one short read (plus one empty write
    transaction, rolled back). `coordinator` is (entrance, external id) of the coordinator's
    account: is there a private conversation with that person on that entrance?"""
    path = Path(path)
    latest = len(schema_files())
    free = _free_bytes(path)
    if not path.exists():
        problem = _folder_writable(path)
        return MemoryHealth(
            path=path,
            exists=False,
            problem=problem,
            writable=problem is None,
            write_problem=problem,
            schema_latest=latest,
            free_bytes=free,
        )
    if path.is_dir():
        return MemoryHealth(
            path=path, exists=True, problem=f"{path} is a folder", schema_latest=latest
        )
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    except sqlite3.Error as exc:
        return MemoryHealth(
            path=path,
            exists=True,
            problem=str(exc),
            write_problem=_access_problem(path),
            schema_latest=latest,
            free_bytes=free,
        )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            quick = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as exc:
            return MemoryHealth(
                path=path,
                exists=True,
                problem=str(exc),
                write_problem=_access_problem(path),
                schema_latest=latest,
                free_bytes=free,
            )
        write_problem = _write_problem(conn, path)
        soul = leases = None
        dm: bool | None = None
        try:
            soul = conn.execute(
                "SELECT id, sha256 FROM soul_versions ORDER BY id DESC LIMIT 1"
            ).fetchone()
            here = socket.gethostname()
            leases = [
                LeaseHolder(
                    row["name"],
                    row["holder"],
                    row["host"],
                    row["pid"],
                    row["expires_at"],
                    pid_alive(row["pid"]) if row["host"] == here else None,
                )
                for row in conn.execute(
                    "SELECT name, holder, host, pid, expires_at FROM leases ORDER BY name"
                )
            ]
            if coordinator is not None:
                dm = _coordinator_dm(conn, *coordinator)
        except sqlite3.DatabaseError:
            pass  # an old or empty schema: reported through schema_version
        return MemoryHealth(
            path=path,
            exists=True,
            opened=True,
            writable=write_problem is None,
            write_problem=write_problem,
            schema_version=version,
            schema_latest=latest,
            quick_check="ok" if quick == ["ok"] else "; ".join(quick),
            free_bytes=free,
            soul_version=soul["id"] if soul else None,
            soul_sha256=soul["sha256"] if soul else None,
            leases=leases or [],
            coordinator_dm=dm,
        )
    finally:
        conn.close()


def _access_problem(path: Path) -> str | None:
    """Why this process may not write memory.db or make its -wal and -shm files beside it
    (a read-only disk says so even to root)."""
    for target in (path, path.parent):
        if not os.access(target, os.W_OK):
            return f"{target} is not writable"
    return None


def _write_problem(conn: sqlite3.Connection, path: Path) -> str | None:
    """Why memory.db cannot be written (None: a write transaction can start)."""
    problem = _access_problem(path)
    if problem is not None:
        return problem
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return str(exc)
    return None


def _coordinator_dm(conn: sqlite3.Connection, entrance: str, external_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM identities i"
        " JOIN conversations c ON c.person_id = i.person_id AND c.entrance = i.entrance"
        " WHERE i.entrance = :entrance AND i.external_id = :external_id AND c.kind = 'dm'"
        " LIMIT 1",
        {"entrance": entrance, "external_id": external_id},
    ).fetchone()
    return row is not None
