"""Reminders and recurring plans in memory.db: an intention's kind and recurrence, and the
next occurrence of a recurring plan (a person's timezone is `IdentityStore`'s).

Only SQL; the rule of a recurrence (which instant comes next) is `bot.recurrence`'s.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

from bot.memory.database import Database, audit_in
from bot.memory.records import NewIntention
from bot.recurrence import next_occurrence

# Every column of an occurrence but its own state: the next one is the same plan.
_NEXT_OCCURRENCE = """
    INSERT INTO intentions (owner_instance, entrance, conversation_id, person_id, visibility,
        text, subject, due_at, duration_s, target_entrance, status, source_message_id,
        created_at, updated_at, kind, recurrence)
    SELECT owner_instance, entrance, conversation_id, person_id, visibility, text, subject,
        :due_at, duration_s, target_entrance, 'open', source_message_id, :now, :now, kind,
        recurrence
    FROM intentions o WHERE id = :id
      -- Once per series: not when its next occurrence is already waiting (a snoozed
      -- occurrence falling due again must not start a second series).
      AND NOT EXISTS (
        SELECT 1 FROM intentions n INDEXED BY intentions_to_follow
        WHERE n.follow_up IS NULL AND n.due_at IS NOT NULL AND n.due_at > o.due_at
          AND n.id <> o.id AND n.status IN ('open', 'conflicted', 'resolved')
          AND n.conversation_id IS o.conversation_id AND n.text = o.text
          AND n.recurrence = o.recurrence)
"""


def set_intention_plan_in(conn: sqlite3.Connection, intention_id: int, new: NewIntention) -> None:
    """Write what `add_intention_in` does not: the kind and the recurrence (a plain
    promise, once, leaves the row as stored)."""
    if new.kind == "promise" and new.recurrence is None:
        return
    conn.execute(
        "UPDATE intentions SET kind = :kind, recurrence = :recurrence WHERE id = :id",
        {"kind": new.kind, "recurrence": new.recurrence, "id": intention_id},
    )


def schedule_next_occurrences_in(
    conn: sqlite3.Connection, now: float, intention_ids: list[int]
) -> list[int]:
    """For each recurring intention among `intention_ids` (just claimed for a follow-up),
    a new open intention for its next occurrence after both its due time and now (missed
    occurrences are not piled up); returns the new ids. In the claim's transaction, so the
    series goes on exactly once."""
    if not intention_ids:
        return []
    marks = ", ".join("?" * len(intention_ids))
    rows = conn.execute(
        f"SELECT id, due_at, recurrence FROM intentions WHERE id IN ({marks})"
        " AND recurrence IS NOT NULL",
        intention_ids,
    ).fetchall()
    created = []
    for row in rows:
        after = datetime.fromtimestamp(max(row["due_at"] or now, now), UTC)
        try:
            following = next_occurrence(json.loads(row["recurrence"]), after)
        except (ValueError, TypeError, KeyError):
            following = None
        if following is None:
            continue
        cursor = conn.execute(
            _NEXT_OCCURRENCE, {"due_at": following.timestamp(), "now": now, "id": row["id"]}
        )
        if cursor.rowcount != 1 or cursor.lastrowid is None:
            continue
        new_id = cursor.lastrowid
        audit_in(conn, now, "scheduler", "intention.recurs", str(new_id), {"after": row["id"]})
        created.append(new_id)
    return created


class ReminderStore(Database):
    async def intention_plan(self, intention_id: int) -> tuple[str, str | None] | None:
        """An intention's kind and recurrence (JSON), None when there is no such row."""
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT kind, recurrence FROM intentions WHERE id = ?", (intention_id,)
            ).fetchone()
        )
        return (row["kind"], row["recurrence"]) if row is not None else None
