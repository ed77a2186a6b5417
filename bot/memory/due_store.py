"""Due intentions become turns: the scheduler claims what fell due and queues one outbox row
per intention for the entrance owning its conversation (kind 'due', dedupe key `due:ID`);
that entrance reads the promise back here to run the follow-up turn.

Exactly once: the claim and the row are one fenced transaction, the row's dedupe key
admits one per intention, and the turn's reply has its own key (`due-reply:ID`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from bot.crash import crash_point
from bot.memory.coordinator_store import _check_lease, enqueue_outgoing_in
from bot.memory.database import Database, audit_in
from bot.memory.outbox_store import enqueue_in
from bot.memory.records import DueFollowUp, Outgoing
from bot.memory.reminder_store import schedule_next_occurrences_in
from bot.models import Author, Incoming

DUE_KIND = "due"

_TO_FOLLOW = """
    SELECT i.id, i.text, c.entrance, c.external_id AS target
    FROM intentions i INDEXED BY intentions_to_follow
    JOIN conversations c ON c.id = i.conversation_id
    WHERE i.follow_up IS NULL AND i.due_at IS NOT NULL AND i.due_at <= :now
      AND i.status IN ('open', 'resolved')
    ORDER BY i.due_at LIMIT :limit
"""

_WAITING = """
    SELECT i.id, i.text, i.due_at, c.entrance
    FROM intentions i INDEXED BY intentions_following
    JOIN conversations c ON c.id = i.conversation_id
    WHERE i.follow_up = 'queued' AND i.due_at < :cutoff AND i.late_noticed_at IS NULL
      AND i.status IN ('open', 'conflicted', 'resolved')
"""

_FOLLOW_UP = """
    SELECT i.id, i.text, i.due_at, i.status, i.follow_up, i.kind AS intention_kind,
           c.entrance, c.external_id AS conversation, c.kind, c.title,
           COALESCE(src.external_id, who.external_id) AS author,
           COALESCE(src.display_name, who.display_name) AS display_name
    FROM intentions i
    JOIN conversations c ON c.id = i.conversation_id
    LEFT JOIN messages m ON m.id = i.source_message_id
    LEFT JOIN identities src ON src.id = m.identity_id
    LEFT JOIN identities who ON who.id = (
        SELECT id FROM identities WHERE person_id = i.person_id AND entrance = c.entrance
        ORDER BY id LIMIT 1)
    WHERE i.id = :id
"""


def due_event_id(intention_id: int) -> str:
    """The internal event's platform id: one per intention, so recording it is idempotent."""
    return f"due:{intention_id}"


class DueStore(Database):
    async def queue_due_follow_ups(
        self, *, lease: str, holder: str, epoch: int, limit: int = 100
    ) -> list[int]:
        """Claim up to `limit` intentions that fell due (open or kept by the coordinator,
        with a conversation) and queue one 'due' outbox row each for the entrance owning
        the conversation, in one transaction fenced by the lease; returns their ids."""

        def run(conn: sqlite3.Connection) -> list[int]:
            now = self.now
            _check_lease(conn, now, lease, holder, epoch)
            found = conn.execute(_TO_FOLLOW, {"now": now, "limit": limit}).fetchall()
            for row in found:
                enqueue_in(
                    conn,
                    now,
                    entrance=row["entrance"],
                    target=row["target"],
                    text=row["text"],
                    payload={"kind": DUE_KIND, "intention_id": row["id"]},
                    dedupe_key=f"due:{row['id']}",
                    epoch=epoch,
                )
            conn.executemany(
                "UPDATE intentions SET follow_up = 'queued', follow_up_at = ? WHERE id = ?",
                [(now, row["id"]) for row in found],
            )
            # A recurring plan's next occurrence is its own intention, due turn included.
            schedule_next_occurrences_in(conn, now, [row["id"] for row in found])
            if found:
                crash_point("during-due-queue")  # before the commit: none of it happened
            return [row["id"] for row in found]

        return await self.write(run)

    async def notice_waiting_follow_ups(
        self,
        older_than_s: float,
        notice: Callable[[int, str, float, str], Outgoing],
        *,
        lease: str,
        holder: str,
        epoch: int,
    ) -> list[int]:
        """Follow-ups queued and still not sent `older_than_s` after they fell due (their
        entrance is down): `notice(id, text, due_at, entrance)` is queued for each, once."""

        def run(conn: sqlite3.Connection) -> list[int]:
            now = self.now
            _check_lease(conn, now, lease, holder, epoch)
            found = conn.execute(_WAITING, {"cutoff": now - older_than_s}).fetchall()
            for row in found:
                message = notice(row["id"], row["text"], row["due_at"], row["entrance"])
                enqueue_outgoing_in(conn, now, message, epoch=epoch)
            conn.executemany(
                "UPDATE intentions SET late_noticed_at = ? WHERE id = ?",
                [(now, row["id"]) for row in found],
            )
            return [row["id"] for row in found]

        return await self.write(run)

    async def due_follow_up(self, intention_id: int) -> DueFollowUp | None:
        """The promise behind a 'due' row and the internal event its turn answers (None:
        no such intention, or nobody in its conversation to address)."""
        row = await self.read(
            lambda conn: conn.execute(_FOLLOW_UP, {"id": intention_id}).fetchone()
        )
        if row is None or row["author"] is None:
            return None
        due = datetime.fromtimestamp(row["due_at"], UTC)
        incoming = Incoming(
            entrance=row["entrance"],
            conversation_id=row["conversation"],
            conversation_kind=row["kind"],
            conversation_title=row["title"],
            author=Author(external_id=row["author"], display_name=row["display_name"]),
            text=(
                f"(A {row['intention_kind']} fell due at {due:%Y-%m-%d %H:%M} UTC: {row['text']})"
            ),
            platform_message_id=due_event_id(row["id"]),
            received_at=datetime.fromtimestamp(self.now, UTC),
        )
        return DueFollowUp(
            intention_id=row["id"],
            text=row["text"],
            due_at=row["due_at"],
            status=row["status"],
            follow_up=row["follow_up"],
            incoming=incoming,
            kind=row["intention_kind"],
        )

    async def mark_follow_up_unreachable(self, intention_id: int, notice: Outgoing) -> bool:
        """The follow-up could not be delivered: the intention is open again (it expires as
        before) and `notice` goes to the coordinator, once. False: marked already."""

        def run(conn: sqlite3.Connection) -> bool:
            now = self.now
            marked = conn.execute(
                "UPDATE intentions SET follow_up = 'unreachable', updated_at = ?,"
                " status = CASE WHEN status = 'done' THEN 'open' ELSE status END"
                " WHERE id = ? AND follow_up IN ('queued', 'sent') RETURNING id",
                (now, intention_id),
            ).fetchone()
            if marked is None:
                return False
            audit_in(conn, now, "scheduler", "intention.unreachable", str(intention_id))
            enqueue_outgoing_in(conn, now, notice)
            return True

        return await self.write(run)
