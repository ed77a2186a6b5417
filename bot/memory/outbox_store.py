"""The outbox: messages one process asks the owner of an entrance to deliver.

Delivery contract: claim due rows atomically (status 'sending' with a claim that expires,
so a crashed deliverer's rows come back), send, mark sent; on failure retry with backoff,
and after N attempts mark failed and audit it. A turn's reply is inserted already claimed
by the instance that sends it at once (`enqueue_claimed_in`), so no courier races it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.memory import rows
from bot.memory.bell import ring_after_commit
from bot.memory.database import Database, audit_in
from bot.models import OutboxItem

# How long a claim holds a row for its deliverer; then another may take it (a deliverer
# that died mid-send). The claimer's own next start gives its rows back at once.
CLAIM_S = 60.0


def enqueue_in(
    conn: sqlite3.Connection,
    now: float,
    *,
    entrance: str,
    target: str,
    text: str,
    payload: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    epoch: int | None = None,
) -> int | None:
    """Queue a message; returns its id, or None when the dedupe key was already queued."""
    cursor = conn.execute(
        "INSERT INTO outbox (entrance, target, text, payload, status, next_attempt_at,"
        " dedupe_key, epoch, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)"
        " ON CONFLICT (dedupe_key) DO NOTHING",
        (
            entrance,
            target,
            text,
            json.dumps(payload) if payload else None,
            now,
            dedupe_key,
            epoch,
            now,
        ),
    )
    if not cursor.rowcount:
        return None
    ring_after_commit()  # due now: the couriers hear of it (bot/memory/bell.py)
    return cursor.lastrowid


@dataclass(frozen=True)
class NewRow:
    """A row inserted in this transaction whose id is not read back yet: `sql` (with
    `params`) names it in the statements that follow it, and `cursor`, its INSERT's, gives
    the id once asked. On PostgreSQL the INSERT then travels with those statements and the
    COMMIT, not in a round trip of its own (`bot.memory.pg_engine.PgConnection`)."""

    sql: str
    params: tuple[Any, ...]
    cursor: sqlite3.Cursor

    @property
    def id(self) -> int:
        row_id = self.cursor.lastrowid
        assert row_id is not None
        return row_id


@dataclass(frozen=True)
class Claimed:
    """An outbox row `enqueue_claimed_in` inserted (or not: its dedupe key was queued
    before), known but for its id, which `cursor` gives once asked: on PostgreSQL that may
    be after the COMMIT, which the INSERT then travels with (a turn's reply: one round trip
    fewer than reading the row back at once). Likewise its payload's "out_id" (`out`)."""

    cursor: sqlite3.Cursor
    entrance: str
    target: str
    text: str
    payload: dict[str, Any]  # as stored, but for "out_id"
    dedupe_key: str
    created_at: float
    out: NewRow | None = None

    def item(self) -> OutboxItem | None:
        """The row as `rows.outbox_item` reads it; None when nothing was inserted."""
        if not self.cursor.rowcount:
            return None
        assert self.cursor.lastrowid is not None
        payload = {**self.payload} if self.out is None else {**self.payload, "out_id": self.out.id}
        return OutboxItem(
            id=self.cursor.lastrowid,
            entrance=self.entrance,
            target=self.target,
            text=self.text,
            payload=payload,
            status="sending",
            attempts=1,
            dedupe_key=self.dedupe_key,
            created_at=datetime.fromtimestamp(self.created_at, UTC),
        )


def enqueue_claimed_in(
    conn: sqlite3.Connection,
    now: float,
    claimer: str,
    *,
    entrance: str,
    target: str,
    text: str,
    payload: dict[str, Any],
    dedupe_key: str,
    out: NewRow | None = None,
) -> Claimed:
    """Queue a message `claimer` sends at once (a turn's reply), stored already claimed by
    it: no courier takes it meanwhile (nor is woken for it). Its row: `Claimed.item()`
    (None when the dedupe key was already queued). `out`: the message it delivers, inserted
    just before, whose id the payload's "out_id" gets in SQL (not read back first)."""
    value, params = "?", (json.dumps(payload),)
    if out is not None:
        payload = {key: item for key, item in payload.items() if key != "out_id"}
        # The JSON object with "out_id" last, its number written by the statement.
        head = json.dumps(payload)[:-1] + (", " if payload else "") + '"out_id": '
        value, params = f"? || CAST({out.sql} AS TEXT) || '}}'", (head, *out.params)
    cursor = conn.execute(
        "INSERT INTO outbox (entrance, target, text, payload, status, attempts, next_attempt_at,"
        f" claimed_by, claimed_until, dedupe_key, created_at) VALUES (?, ?, ?, {value},"
        " 'sending', 1, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
        (entrance, target, text, *params, now, claimer, now + CLAIM_S, dedupe_key, now),
    )
    return Claimed(cursor, entrance, target, text, payload, dedupe_key, now, out)


# Due rows of one entrance, oldest first: two seeks of the outbox_due index (pending and
# due; claimed and abandoned) rather than a scan of every row it ever sent (4 ms at 12 000
# sent rows, inside the write lock).
DUE_IDS_SQL = """
    SELECT id FROM (
        SELECT id, target FROM outbox
        WHERE entrance = :entrance AND status = 'pending' AND next_attempt_at <= :now
        UNION ALL
        SELECT id, target FROM outbox
        WHERE entrance = :entrance AND status = 'sending' AND claimed_until < :now
    ) AS due
    WHERE :targets IS NULL OR target IN (SELECT value FROM json_each(:targets))
    ORDER BY id LIMIT :limit
"""


def due_params(entrance: str, targets: list[str] | None, now: float, limit: int) -> dict[str, Any]:
    return {
        "entrance": entrance,
        "targets": json.dumps(targets) if targets is not None else None,
        "now": now,
        "limit": limit,
    }


class OutboxStore(Database):
    async def enqueue(
        self,
        *,
        entrance: str,
        target: str,
        text: str,
        payload: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
    ) -> int | None:
        return await self.write(
            lambda conn: enqueue_in(
                conn,
                self.now,
                entrance=entrance,
                target=target,
                text=text,
                payload=payload,
                dedupe_key=dedupe_key,
            )
        )

    async def outbox_due(self, entrance: str, *, targets: list[str] | None = None) -> bool:
        """Is anything due for this entrance? A read: the courier's check before it claims
        (a claim is a write, which would take the write lock every time anyone commits).

        The courier asks each time memory changed (at most every 0.05 s: in bench/lean
        about twice per message and entrance, nearly always to hear no): on SQLite the
        indexed check is a `peek`, on the event loop, instead of a hop to the reader thread
        and back."""
        sql = f"SELECT EXISTS ({DUE_IDS_SQL})"
        params = due_params(entrance, targets, self.now, 1)
        found = self.peek(sql, params)
        if found is not None:
            return bool(found == 1)
        return await self.read(lambda conn: conn.execute(sql, params).fetchone()[0] == 1)

    async def claim_outbox(
        self,
        entrance: str,
        claimer: str,
        *,
        targets: list[str] | None = None,
        claim_s: float = CLAIM_S,
        limit: int = 10,
    ) -> list[OutboxItem]:
        """Atomically take due rows for this entrance (pending, or claimed and abandoned)."""

        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            now = self.now
            return conn.execute(
                "UPDATE outbox SET status = 'sending', claimed_by = :claimer,"
                " claimed_until = :until, attempts = attempts + 1"
                f" WHERE id IN ({DUE_IDS_SQL}) RETURNING *",
                {
                    **due_params(entrance, targets, now, limit),
                    "claimer": claimer,
                    "until": now + claim_s,
                },
            ).fetchall()

        claimed = await self.write(run)
        return sorted((rows.outbox_item(row) for row in claimed), key=lambda item: item.id)

    async def release_claims(self, entrance: str, claimer: str) -> int:
        """Give back rows a crashed predecessor of this claimer had taken (at start-up)."""

        def run(conn: sqlite3.Connection) -> int:
            released = conn.execute(
                "UPDATE outbox SET status = 'pending', claimed_until = NULL"
                " WHERE entrance = ? AND claimed_by = ? AND status = 'sending'",
                (entrance, claimer),
            ).rowcount
            if released:
                ring_after_commit()
            return int(released)

        return await self.write(run)

    async def mark_sent(self, item_id: int, claimer: str, platform_id: str | None = None) -> bool:
        """The platform took the row: mark it sent and, for a reply, its message sent with
        the platform's message id (a later edit, reply-to or deletion finds it by that)."""

        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "UPDATE outbox SET status = 'sent', sent_at = ?, claimed_until = NULL"
                " WHERE id = ? AND claimed_by = ? AND status = 'sending'"
                " RETURNING json_extract(payload, '$.out_id') AS out_id",
                (self.now, item_id, claimer),
            ).fetchone()
            if row is None:
                return False
            if row["out_id"] is not None:
                conn.execute(
                    "UPDATE messages SET status = 'sent' WHERE id = ? AND direction = 'out'",
                    (row["out_id"],),
                )
                # OR IGNORE: an id some other row already holds must not undo the mark.
                conn.execute(
                    "UPDATE OR IGNORE messages SET platform_message_id = ?"
                    " WHERE id = ? AND platform_message_id IS NULL",
                    (platform_id, row["out_id"]),
                )
            return True

        return await self.write(run)

    async def mark_failed_attempt(
        self, item_id: int, claimer: str, error: str, *, max_attempts: int, backoff_s: float
    ) -> str:
        """Schedule a retry with exponential backoff, or give up: returns the new status."""

        def run(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT attempts, entrance, target FROM outbox WHERE id = ? AND claimed_by = ?",
                (item_id, claimer),
            ).fetchone()
            if row is None:
                return "unknown"
            if row["attempts"] >= max_attempts:
                conn.execute(
                    "UPDATE outbox SET status = 'failed', last_error = ?, claimed_until = NULL"
                    " WHERE id = ?",
                    (error[:500], item_id),
                )
                audit_in(
                    conn,
                    self.now,
                    claimer,
                    "outbox.failed",
                    str(item_id),
                    {"entrance": row["entrance"], "target": row["target"], "error": error[:500]},
                )
                return "failed"
            delay = backoff_s * 2 ** (row["attempts"] - 1)
            conn.execute(
                "UPDATE outbox SET status = 'pending', last_error = ?, next_attempt_at = ?,"
                " claimed_until = NULL WHERE id = ?",
                (error[:500], self.now + delay, item_id),
            )
            return "pending"

        return await self.write(run)

    async def outbox(self, status: str | None = None, limit: int = 100) -> list[OutboxItem]:
        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if status is None:
                return conn.execute(
                    "SELECT * FROM outbox ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            return conn.execute(
                "SELECT * FROM outbox WHERE status = ? ORDER BY id DESC LIMIT ?", (status, limit)
            ).fetchall()

        return [rows.outbox_item(row) for row in await self.read(run)]
