"""The web console's rows in memory.db: its accounts, sessions, one-time sign-in links,
failed sign-ins, and the reads its pages need (the timeline, each instance's last turn).

Part of the only package that speaks SQL; `bot.console` calls these methods and never
writes SQL itself. Secrets never reach this module in the clear: passwords arrive as
argon2 hashes, tokens as their sha256.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from bot.memory import rows
from bot.memory.database import Database, audit_in
from bot.models import Message

ConsoleRole = Literal["admin", "coordinator", "viewer"]

_TIMELINE_SELECT = """
    SELECT m.*, c.external_id AS conversation_external_id, c.kind AS conversation_kind,
        p.name AS person_name
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    LEFT JOIN people p ON p.id = m.person_id
"""
_TIMELINE_PAGE = """
    AND m.id < :upper AND m.id > :lower
    AND (:entrance IS NULL OR m.entrance = :entrance)
    AND (:person IS NULL OR m.person_id = :person)
    ORDER BY m.id DESC LIMIT :limit
"""
# One statement per leading filter, so that each walks its own index backwards from the
# newest row (messages_conversation, messages_person, messages_entrance, the primary key)
# and stops after a page: never a scan of a large table, never a sort.
TIMELINE_SQL = {
    "conversation": _TIMELINE_SELECT + " WHERE m.conversation_id = :conversation" + _TIMELINE_PAGE,
    "person": _TIMELINE_SELECT + " WHERE m.person_id = :person" + _TIMELINE_PAGE,
    "entrance": _TIMELINE_SELECT + " WHERE m.entrance = :entrance" + _TIMELINE_PAGE,
    "all": _TIMELINE_SELECT + " WHERE m.id > 0" + _TIMELINE_PAGE,
}
NO_UPPER = 2**63 - 1


def timeline_statement(query: TimelineFilter) -> tuple[str, dict[str, object]]:
    """The statement and parameters of one timeline page."""
    if query.conversation_id is not None:
        key = "conversation"
    elif query.person_id is not None:
        key = "person"
    elif query.entrance is not None:
        key = "entrance"
    else:
        key = "all"
    return TIMELINE_SQL[key], {
        "conversation": query.conversation_id,
        "person": query.person_id,
        "entrance": query.entrance,
        "upper": query.before_id if query.before_id is not None else NO_UPPER,
        "lower": query.after_id if query.after_id is not None else 0,
        "limit": query.limit,
    }


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    role: ConsoleRole
    password_hash: str | None
    created_at: float


@dataclass(frozen=True)
class ConsoleSession:
    user_name: str
    role: ConsoleRole
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class TimelineFilter:
    """What the mirror view's timeline shows: None means any."""

    entrance: str | None = None
    person_id: int | None = None
    conversation_id: int | None = None
    before_id: int | None = None  # older pages
    after_id: int | None = None  # what is new since the page last looked
    limit: int = 50


class ConsoleStore(Database):
    # Accounts --------------------------------------------------------------------------

    async def add_console_user(
        self, name: str, role: ConsoleRole, password_hash: str | None, actor: str
    ) -> bool:
        """Create (or replace the role and password of) a console account; audited.
        Returns True when it is new."""

        def run(conn: sqlite3.Connection) -> bool:
            now = self.now
            existed = conn.execute("SELECT 1 FROM console_users WHERE name = ?", (name,)).fetchone()
            conn.execute(
                "INSERT INTO console_users (name, role, password_hash, created_at, created_by)"
                " VALUES (:name, :role, :hash, :now, :actor)"
                " ON CONFLICT (name) DO UPDATE SET role = :role, password_hash = :hash",
                {"name": name, "role": role, "hash": password_hash, "now": now, "actor": actor},
            )
            # A changed role or password ends the account's sessions.
            conn.execute("DELETE FROM console_sessions WHERE user_name = ?", (name,))
            audit_in(conn, now, actor, "console.user_set", name, {"role": role})
            return existed is None

        return await self.write(run)

    async def console_user(self, name: str) -> ConsoleUser | None:
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT * FROM console_users WHERE name = ?", (name,)
            ).fetchone()
        )
        if row is None:
            return None
        return ConsoleUser(row["name"], row["role"], row["password_hash"], row["created_at"])

    async def console_users(self) -> list[ConsoleUser]:
        found = await self.read(
            lambda conn: conn.execute("SELECT * FROM console_users ORDER BY name").fetchall()
        )
        return [
            ConsoleUser(row["name"], row["role"], row["password_hash"], row["created_at"])
            for row in found
        ]

    # One-time sign-in links ------------------------------------------------------------

    async def add_sign_in_link(
        self, token_sha256: str, user_name: str, role: ConsoleRole, ttl_s: float
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            now = self.now
            conn.execute("DELETE FROM console_sign_in_links WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO console_sign_in_links"
                " (token_sha256, user_name, role, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_sha256, user_name, role, now, now + ttl_s),
            )

        await self.write(run)

    async def use_sign_in_link(self, token_sha256: str) -> tuple[str, ConsoleRole] | None:
        """Spend a sign-in link: (user, role) the first time before it expires, else None."""

        def run(conn: sqlite3.Connection) -> tuple[str, ConsoleRole] | None:
            row = conn.execute(
                "UPDATE console_sign_in_links SET used_at = :now"
                " WHERE token_sha256 = :token AND used_at IS NULL AND expires_at > :now"
                " RETURNING user_name, role",
                {"token": token_sha256, "now": self.now},
            ).fetchone()
            return (row["user_name"], row["role"]) if row else None

        return await self.write(run)

    # Sessions --------------------------------------------------------------------------

    async def start_console_session(
        self, token_sha256: str, user_name: str, role: ConsoleRole, csrf: str, ttl_s: float
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            now = self.now
            conn.execute("DELETE FROM console_sessions WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO console_sessions"
                " (token_sha256, user_name, role, csrf, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_sha256, user_name, role, csrf, now, now + ttl_s),
            )
            audit_in(conn, now, f"console:{user_name}", "console.signed_in", user_name)

        await self.write(run)

    async def console_session(self, token_sha256: str) -> ConsoleSession | None:
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT * FROM console_sessions WHERE token_sha256 = ? AND expires_at > ?",
                (token_sha256, self.now),
            ).fetchone()
        )
        if row is None:
            return None
        return ConsoleSession(row["user_name"], row["role"], row["csrf"], row["expires_at"])

    async def end_console_session(self, token_sha256: str) -> None:
        await self.write(
            lambda conn: conn.execute(
                "DELETE FROM console_sessions WHERE token_sha256 = ?", (token_sha256,)
            )
        )

    # Failed sign-ins -------------------------------------------------------------------

    async def recent_failed_sign_ins(self, name: str, client: str, within_s: float) -> int:
        """Failed sign-ins in the last `within_s` for this name or from this client."""

        def run(conn: sqlite3.Connection) -> int:
            since = self.now - within_s
            by_name = conn.execute(
                "SELECT count(*) FROM console_failed_sign_ins WHERE name = ? AND at > ?",
                (name, since),
            ).fetchone()[0]
            by_client = conn.execute(
                "SELECT count(*) FROM console_failed_sign_ins WHERE client = ? AND at > ?",
                (client, since),
            ).fetchone()[0]
            return int(max(by_name, by_client))

        return await self.read(run)

    async def failed_sign_in(self, name: str, client: str, reason: str) -> None:
        """Remember and audit a refused sign-in (wrong password, unknown name, rate limit)."""

        def run(conn: sqlite3.Connection) -> None:
            now = self.now
            conn.execute(
                "INSERT INTO console_failed_sign_ins (at, name, client) VALUES (?, ?, ?)",
                (now, name, client),
            )
            audit_in(
                conn,
                now,
                f"console:{name}",
                "console.sign_in_refused",
                name,
                {"client": client, "reason": reason},
            )

        await self.write(run)

    # What the pages read ---------------------------------------------------------------

    async def timeline(self, query: TimelineFilter) -> list[Message]:
        """Messages newest first, filtered, one page (see TIMELINE_SQL)."""
        sql, params = timeline_statement(query)
        found = await self.read(lambda conn: conn.execute(sql, params).fetchall())
        return [rows.message(row) for row in found]

    async def newest_message_id(self) -> int | None:
        """The newest message's id (the primary key's max: one b-tree step); None when
        there is none yet."""
        row = await self.read(lambda conn: conn.execute("SELECT max(id) FROM messages").fetchone())
        return None if row is None or row[0] is None else int(row[0])

    async def last_turns(self, instance_ids: list[str]) -> dict[str, float]:
        """Per instance, when it last said or heard something (epoch seconds)."""

        def run(conn: sqlite3.Connection) -> dict[str, float]:
            found: dict[str, float] = {}
            for instance_id in instance_ids:
                row = conn.execute(
                    "SELECT created_at FROM messages WHERE instance_id = ?"
                    " ORDER BY id DESC LIMIT 1",
                    (instance_id,),
                ).fetchone()
                if row is not None:
                    found[instance_id] = row["created_at"]
            return found

        return await self.read(run)

    async def conversation_id_of(self, entrance: str, external_id: str) -> int | None:
        """Memory's id of a platform conversation (None: nobody spoke there yet)."""
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT id FROM conversations WHERE entrance = ? AND external_id = ?",
                (entrance, external_id),
            ).fetchone()
        )
        return None if row is None else int(row["id"])
