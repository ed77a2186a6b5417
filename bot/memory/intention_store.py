"""Intentions and conflicts (the coordinator's items) in memory.db.

A new intention is checked against the other active intentions and the latest decision on
its subject in the same transaction that stores it (rules in `bot.intentions`).
"""

from __future__ import annotations

import json
import sqlite3

from bot.intentions import (
    ACTIVE_STATUSES,
    Decision,
    IntentionFacts,
    find_conflicts,
    normalize_subject,
)
from bot.memory import rows
from bot.memory.database import Database, audit_in
from bot.memory.records import ItemError, NewIntention, ReminderError, Upcoming
from bot.memory.reminder_store import schedule_next_occurrences_in
from bot.models import Conflict, Intention

_ACTIVE = "('open', 'conflicted', 'resolved')"
_INTENTION = (
    "SELECT i.*, p.name AS person_name FROM intentions i LEFT JOIN people p ON p.id = i.person_id"
)


# What a person (or an operator) sees of an intention in a list of what is planned.
_UPCOMING = """
    SELECT i.id, i.kind, i.text, i.due_at, i.status, i.recurrence, i.entrance, i.owner_instance,
           i.person_id, p.name AS person_name, p.timezone
    FROM intentions i LEFT JOIN people p ON p.id = i.person_id
"""

# A person's own intention that /snooze may move: an active one, or one its follow-up
# turn just marked done (snoozing a reminder that fired asks for it again).
_SNOOZABLE = f"(status IN {_ACTIVE} OR (status = 'done' AND follow_up = 'sent'))"


def _upcoming(row: sqlite3.Row) -> Upcoming:
    return Upcoming(
        id=row["id"],
        kind=row["kind"],
        text=row["text"],
        due_at=row["due_at"],
        status=row["status"],
        recurring=row["recurrence"] is not None,
        entrance=row["entrance"],
        owner_instance=row["owner_instance"],
        person_id=row["person_id"],
        person_name=row["person_name"],
        timezone=row["timezone"],
    )


def _facts(row: sqlite3.Row) -> IntentionFacts:
    return IntentionFacts(
        id=row["id"],
        owner_instance=row["owner_instance"],
        subject=row["subject"],
        text=row["text"],
        due_at=row["due_at"],
        duration_s=row["duration_s"],
        status=row["status"],
        target_entrance=row["target_entrance"],
    )


def latest_decision_in(conn: sqlite3.Connection, subject: str) -> Decision | None:
    row = conn.execute(
        "SELECT id, subject, kept FROM conflicts WHERE subject = ? AND kind = 'conflict'"
        " AND status = 'resolved' ORDER BY resolved_at DESC LIMIT 1",
        (subject,),
    ).fetchone()
    if row is None:
        return None
    kept = tuple(json.loads(row["kept"] or "[]"))
    return Decision(row["id"], row["subject"], kept)


def add_intention_in(conn: sqlite3.Connection, now: float, new: NewIntention) -> tuple[int, int]:
    """Store an intention and detect its conflicts; returns (intention id, conflicts found)."""
    intention_id = conn.execute(
        "INSERT INTO intentions (owner_instance, entrance, conversation_id, person_id, visibility,"
        " text, subject, due_at, duration_s, target_entrance, status, source_message_id,"
        " created_at, updated_at) VALUES (:owner_instance, :entrance, :conversation_id,"
        " :person_id, :visibility, :text, :subject, :due_at, :duration_s, :target_entrance,"
        " 'open', :source_message_id, :now, :now)",
        {**new.__dict__, "now": now},
    ).lastrowid
    assert intention_id is not None
    found = 0
    if new.target_entrance and new.target_entrance != new.entrance:
        found += _insert_item(
            conn, now, "request", intention_id, None, None, "needs another entrance", new.subject
        )
    facts = IntentionFacts(
        intention_id, new.owner_instance, new.subject, new.text, new.due_at, new.duration_s
    )
    window_rows = []
    if new.due_at is not None:
        # Only intentions that can overlap: due before our end, within a day before our start.
        window_rows = conn.execute(
            f"SELECT * FROM intentions WHERE status IN {_ACTIVE} AND due_at IS NOT NULL"
            " AND due_at < :end AND due_at > :start - 86400 AND id <> :id",
            {"end": new.due_at + new.duration_s, "start": new.due_at, "id": intention_id},
        ).fetchall()
    subject_rows = conn.execute(
        f"SELECT * FROM intentions WHERE status IN {_ACTIVE} AND subject = ? AND id <> ?",
        (new.subject, intention_id),
    ).fetchall()
    others = {row["id"]: _facts(row) for row in [*window_rows, *subject_rows]}
    decision = latest_decision_in(conn, new.subject)
    for finding in find_conflicts(facts, list(others.values()), [decision] if decision else []):
        found += _insert_item(
            conn,
            now,
            "conflict",
            finding.intention_a,
            finding.intention_b,
            finding.decision_of,
            finding.reason,
            finding.subject,
        )
        ids = [finding.intention_a] + ([finding.intention_b] if finding.intention_b else [])
        conn.execute(
            f"UPDATE intentions SET status = 'conflicted', updated_at = ?"
            f" WHERE id IN ({', '.join('?' * len(ids))}) AND status IN ('open', 'resolved')",
            (now, *ids),
        )
    return intention_id, found


def _insert_item(
    conn: sqlite3.Connection,
    now: float,
    kind: str,
    intention_a: int,
    intention_b: int | None,
    decision_of: int | None,
    reason: str,
    subject: str,
) -> int:
    cursor = conn.execute(
        "INSERT INTO conflicts (kind, intention_a, intention_b, decision_of, reason, subject,"
        " due_at, status, created_at) VALUES (:kind, :a, :b, :decision, :reason, :subject,"
        " (SELECT min(due_at) FROM intentions WHERE id IN (:a, :b)), 'open', :now)"
        " ON CONFLICT DO NOTHING",
        {
            "kind": kind,
            "a": intention_a,
            "b": intention_b,
            "decision": decision_of,
            "reason": reason,
            "subject": subject,
            "now": now,
        },
    )
    return cursor.rowcount


class IntentionStore(Database):
    async def add_intention(self, new: NewIntention) -> tuple[int, int]:
        return await self.write(add_intention_in, self.now, new)

    async def add_intentions(self, batch: list[NewIntention]) -> int:
        """Store many intentions in one transaction (imports, benchmarks); returns conflicts."""

        def run(conn: sqlite3.Connection) -> int:
            now = self.now
            return sum(add_intention_in(conn, now, new)[1] for new in batch)

        return await self.write(run)

    async def intention(self, intention_id: int) -> Intention | None:
        row = await self.read(
            lambda conn: conn.execute(f"{_INTENTION} WHERE i.id = ?", (intention_id,)).fetchone()
        )
        return rows.intention(row) if row else None

    async def intentions(self, status: str | None = None, limit: int = 200) -> list[Intention]:
        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if status is None:
                return conn.execute(f"{_INTENTION} ORDER BY i.id DESC LIMIT ?", (limit,)).fetchall()
            return conn.execute(
                f"{_INTENTION} WHERE i.status = ? ORDER BY i.id DESC LIMIT ?", (status, limit)
            ).fetchall()

        return [rows.intention(row) for row in await self.read(run)]

    async def conflict(self, conflict_id: int) -> Conflict | None:
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT * FROM conflicts WHERE id = ?", (conflict_id,)
            ).fetchone()
        )
        return rows.conflict(row) if row else None

    async def conflicts(self, status: str | None = None, limit: int = 200) -> list[Conflict]:
        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if status is None:
                return conn.execute(
                    "SELECT * FROM conflicts ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            return conn.execute(
                "SELECT * FROM conflicts WHERE status = ? ORDER BY id DESC LIMIT ?",
                (status, limit),
            ).fetchall()

        return [rows.conflict(row) for row in await self.read(run)]

    async def pending_items(self) -> list[Conflict]:
        """Items waiting for the coordinator (open or surfaced), oldest first."""
        found = await self.read(
            lambda conn: conn.execute(
                "SELECT * FROM conflicts WHERE status IN ('open', 'surfaced') ORDER BY id"
            ).fetchall()
        )
        return [rows.conflict(row) for row in found]

    async def mark_intentions_done(
        self, intention_ids: list[int], *, person_id: int | None, actor: str
    ) -> list[int]:
        """Mark active intentions done (only those about this person, unless person is None)."""
        if not intention_ids:
            return []

        def run(conn: sqlite3.Connection) -> list[int]:
            marks = ", ".join("?" * len(intention_ids))
            done = conn.execute(
                f"UPDATE intentions SET status = 'done', updated_at = ?"
                f" WHERE id IN ({marks}) AND status IN {_ACTIVE}"
                " AND (? IS NULL OR person_id = ?) RETURNING id",
                (self.now, *intention_ids, person_id, person_id),
            ).fetchall()
            for row in done:
                audit_in(conn, self.now, actor, "intention.done", str(row["id"]))
            return [row["id"] for row in done]

        return await self.write(run)

    async def expire_intentions(self, older_than_s: float) -> list[int]:
        """Open intentions past due (or undated and old) by more than older_than_s expire,
        except those whose follow-up turn is queued or sent (bot.memory.due_store): only a
        promise that could not be followed up expires."""

        def run(conn: sqlite3.Connection) -> list[int]:
            cutoff = self.now - older_than_s
            # Two index ranges (status, due_at) rather than a scan of every open intention.
            expired = conn.execute(
                "UPDATE intentions SET status = 'expired', updated_at = :now"
                " WHERE id IN (SELECT id FROM intentions WHERE status = 'open' AND due_at < :cutoff"
                "   AND follow_up IS NOT 'queued' AND follow_up IS NOT 'sent'"
                "   UNION ALL SELECT id FROM intentions WHERE status = 'open' AND due_at IS NULL"
                "   AND created_at < :cutoff) RETURNING id",
                {"now": self.now, "cutoff": cutoff},
            ).fetchall()
            return [row["id"] for row in expired]

        return await self.write(run)

    # A person's own reminders and promises ------------------------------------------

    async def own_intentions(self, person_id: int, limit: int = 50) -> list[Upcoming]:
        """The person's active reminders and promises, soonest first (undated last)."""
        found = await self.read(
            lambda conn: conn.execute(
                f"{_UPCOMING} WHERE i.person_id = :person AND i.status IN {_ACTIVE}"
                " ORDER BY i.due_at IS NULL, i.due_at, i.id LIMIT :limit",
                {"person": person_id, "limit": limit},
            ).fetchall()
        )
        return [_upcoming(row) for row in found]

    async def own_intention(self, intention_id: int, person_id: int) -> Upcoming | None:
        """One of the person's intentions that /snooze may move (None: not theirs, or over)."""
        row = await self.read(
            lambda conn: conn.execute(
                f"{_UPCOMING} WHERE i.id = :id AND i.person_id = :person AND {_SNOOZABLE}",
                {"id": intention_id, "person": person_id},
            ).fetchone()
        )
        return _upcoming(row) if row else None

    async def end_own_intention(
        self, intention_id: int, person_id: int, status: str, *, actor: str
    ) -> str | None:
        """The person ends one of their active intentions ('done' or 'cancelled'; a recurring
        one ends for good): its text, or None when it is not theirs or already over."""
        assert status in ("done", "cancelled")

        def run(conn: sqlite3.Connection) -> str | None:
            now = self.now
            ended = conn.execute(
                f"UPDATE intentions SET status = :status, updated_at = :now"
                f" WHERE id = :id AND person_id = :person AND status IN {_ACTIVE}"
                " RETURNING text, recurrence, conversation_id",
                {"status": status, "now": now, "id": intention_id, "person": person_id},
            ).fetchone()
            if ended is None:
                return None
            if ended["recurrence"] is not None and status == "cancelled":
                # Each occurrence of a series is its own row (bot.memory.reminder_store):
                # the one already waiting goes too, so the series ends.
                conn.execute(
                    f"UPDATE intentions SET status = 'cancelled', updated_at = :now"
                    f" WHERE person_id = :person AND status IN {_ACTIVE}"
                    " AND conversation_id IS :chat AND text = :text AND recurrence = :rule",
                    {
                        "now": now,
                        "person": person_id,
                        "chat": ended["conversation_id"],
                        "text": ended["text"],
                        "rule": ended["recurrence"],
                    },
                )
            elif ended["recurrence"] is not None:
                # Done this time: the series goes on (its next occurrence is made when one
                # is claimed, so one done before it fell due makes the next itself).
                schedule_next_occurrences_in(conn, now, [intention_id])
            audit_in(
                conn,
                now,
                actor,
                f"intention.{status}",
                str(intention_id),
                {"by": "person", "recurring": ended["recurrence"] is not None},
            )
            return str(ended["text"])

        return await self.write(run)

    async def snooze_own_intention(
        self, intention_id: int, person_id: int, due_at: float, *, actor: str
    ) -> bool:
        """Move one of the person's intentions to `due_at` so it falls due again: a follow-up
        already queued is taken back (its row, if not yet sent, is dropped) and the earlier
        rows' dedupe keys are retired, so the scheduler queues a new one. False: not theirs."""

        def run(conn: sqlite3.Connection) -> bool:
            now = self.now
            moved = conn.execute(
                f"UPDATE intentions SET due_at = :due, follow_up = NULL, follow_up_at = NULL,"
                f" late_noticed_at = NULL, updated_at = :now,"
                f" status = CASE WHEN status = 'done' THEN 'open' ELSE status END"
                f" WHERE id = :id AND person_id = :person AND {_SNOOZABLE} RETURNING id",
                {"due": due_at, "now": now, "id": intention_id, "person": person_id},
            ).fetchone()
            if moved is None:
                return False
            keys = {"due": f"due:{intention_id}", "reply": f"due-reply:{intention_id}"}
            conn.execute("DELETE FROM outbox WHERE dedupe_key = :due AND status = 'pending'", keys)
            conn.execute(
                "UPDATE outbox SET dedupe_key = dedupe_key || ':snoozed:' || id"
                " WHERE dedupe_key IN (:due, :reply)",
                keys,
            )
            audit_in(conn, now, actor, "intention.snoozed", str(intention_id), {"due_at": due_at})
            return True

        return await self.write(run)

    # What falls due, and reminders operators set ---------------------------------------

    async def due_intentions(self, limit: int = 50) -> list[Upcoming]:
        """Dated active intentions whose follow-up is still to come, soonest first."""
        found = await self.read(
            lambda conn: conn.execute(
                f"{_UPCOMING} WHERE i.status IN {_ACTIVE} AND i.due_at IS NOT NULL"
                " AND (i.follow_up IS NULL OR i.follow_up = 'queued')"
                " ORDER BY i.due_at, i.id LIMIT :limit",
                {"limit": limit},
            ).fetchall()
        )
        return [_upcoming(row) for row in found]

    async def add_reminder(
        self, entrance: str, external_id: str, text: str, due_at: float, *, actor: str
    ) -> int:
        """Store a 'reminder' for an account, in its private chat on `entrance` and owned by
        that entrance (the scheduler follows it up there); returns its id. Raises
        ReminderError when the account is unknown or has no private chat with the persona."""

        def run(conn: sqlite3.Connection) -> int | str:
            now = self.now
            account = conn.execute(
                "SELECT id, person_id FROM identities WHERE entrance = ? AND external_id = ?",
                (entrance, external_id),
            ).fetchone()
            if account is None:
                return f"I know no account {entrance}:{external_id}"
            chat = conn.execute(
                "SELECT c.id FROM conversations c WHERE c.entrance = :entrance AND c.kind = 'dm'"
                " AND c.person_id = :person ORDER BY EXISTS (SELECT 1 FROM messages m"
                " WHERE m.conversation_id = c.id AND m.identity_id = :identity) DESC, c.id DESC"
                " LIMIT 1",
                {"entrance": entrance, "person": account["person_id"], "identity": account["id"]},
            ).fetchone()
            if chat is None:
                return f"{entrance}:{external_id} has no private chat with me yet"
            # A reminder takes none of the persona's time: no conflict check, so nothing
            # holds it back from falling due.
            intention_id = conn.execute(
                "INSERT INTO intentions (owner_instance, entrance, conversation_id, person_id,"
                " visibility, text, subject, due_at, duration_s, status, kind, created_at,"
                " updated_at) VALUES (:entrance, :entrance, :chat, :person, 'private', :text,"
                " :subject, :due, 0, 'open', 'reminder', :now, :now)",
                {
                    "entrance": entrance,
                    "chat": chat["id"],
                    "person": account["person_id"],
                    "text": text,
                    "subject": normalize_subject(text),
                    "due": due_at,
                    "now": now,
                },
            ).lastrowid
            assert intention_id is not None
            audit_in(
                conn,
                now,
                actor,
                "intention.reminder",
                str(intention_id),
                {"account": f"{entrance}:{external_id}", "due_at": due_at},
            )
            return intention_id

        result = await self.write(run)
        if isinstance(result, str):
            raise ReminderError(result)
        return result


__all__ = ["ACTIVE_STATUSES", "IntentionStore", "ItemError", "NewIntention", "add_intention_in"]
