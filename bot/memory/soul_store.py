"""Soul versions and the audit log in memory.db."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from bot.memory import rows
from bot.memory.database import Database, audit_in
from bot.models import AuditEntry, SoulVersion

_LATEST = "SELECT * FROM soul_versions ORDER BY id DESC LIMIT 1"
NEWEST_SOUL_ID = "SELECT max(id) FROM soul_versions"


def active_soul_in(
    conn: sqlite3.Connection, newest_id: int | None, cached: SoulVersion | None
) -> SoulVersion | None:
    """The active soul in the caller's snapshot, where `NEWEST_SOUL_ID` read `newest_id`:
    `cached` while it is still the newest, so the text is read only after an edit."""
    if newest_id is None:
        return None
    if cached is not None and cached.id == newest_id:
        return cached
    row = conn.execute(_LATEST).fetchone()
    return rows.soul_version(row) if row else None


class SoulStore(Database):
    async def record_soul_version(
        self,
        *,
        text: str,
        name: str,
        sha256: str,
        source: str,
        author: str | None = None,
        inside: Callable[[], object] | None = None,
    ) -> tuple[SoulVersion, bool]:
        """Make this text the active soul; returns (version, created).

        Nothing is recorded when the active version already has this sha256, so several
        processes watching one file record one version per save. `inside` runs within the
        same write transaction, so what it does to SOUL.md is ordered with every other soul
        write: a watcher checks there that the file still holds what it read, a rollback
        writes the file there. Whatever it raises undoes the transaction and is raised.
        """

        def decide(conn: sqlite3.Connection) -> tuple[SoulVersion, bool]:
            latest = conn.execute(_LATEST).fetchone()
            if latest is not None and latest["sha256"] == sha256:
                return rows.soul_version(latest), False
            cursor = conn.execute(
                "INSERT INTO soul_versions (sha256, name, text, created_at, source, author)"
                " VALUES (:sha, :name, :text, :at, :source, :author)",
                {
                    "sha": sha256,
                    "name": name,
                    "text": text,
                    "at": self.now,
                    "source": source,
                    "author": author,
                },
            )
            audit_in(
                conn,
                self.now,
                author or source,
                "soul.version",
                str(cursor.lastrowid),
                {"sha256": sha256, "name": name, "source": source},
            )
            created = conn.execute(
                "SELECT * FROM soul_versions WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
            return rows.soul_version(created), True

        def run(conn: sqlite3.Connection) -> tuple[SoulVersion, bool]:
            decided = decide(conn)
            if inside is not None:
                inside()
            return decided

        return await self.write(run)

    async def active_soul(self) -> SoulVersion | None:
        """The newest soul version. A peek at the newest id (no thread hand-off) tells
        whether the one read last is still it, so the text is read only after an edit (by
        any process). A turn reads it with its view instead (`TurnView.soul`)."""
        cached = self._soul
        if cached is not None and self.peek(NEWEST_SOUL_ID) == cached.id:
            return cached
        row = await self.read(lambda conn: conn.execute(_LATEST).fetchone())
        self._soul = rows.soul_version(row) if row else None
        return self._soul

    async def soul_version(self, version_id: int) -> SoulVersion | None:
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT * FROM soul_versions WHERE id = ?", (version_id,)
            ).fetchone()
        )
        return rows.soul_version(row) if row else None

    async def soul_version_with_sha(self, sha256: str) -> SoulVersion | None:
        """The newest version with this text (its sha256), if it was ever a version."""
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT * FROM soul_versions WHERE sha256 = ? ORDER BY id DESC LIMIT 1",
                (sha256,),
            ).fetchone()
        )
        return rows.soul_version(row) if row else None

    async def soul_history(self, limit: int = 100) -> list[SoulVersion]:
        found = await self.read(
            lambda conn: conn.execute(
                "SELECT * FROM soul_versions ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        )
        return [rows.soul_version(row) for row in found]

    async def audit_log(self, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if action is None:
                return conn.execute(
                    "SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            return conn.execute(
                "SELECT * FROM audit WHERE action = ? ORDER BY id DESC LIMIT ?", (action, limit)
            ).fetchall()

        return [rows.audit_entry(row) for row in await self.read(run)]
