"""The coordinator's items in memory.db: details, decisions, surfacing, reminders.

Writes made on the scheduler's behalf carry its lease epoch and check, in the same
transaction, that the lease is still held (a fencing token): a scheduler that lost its
lease while paused cannot write stale outbox rows.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from bot.memory import rows
from bot.memory.database import Database, audit_in
from bot.memory.outbox_store import enqueue_in
from bot.memory.records import ItemDetails, ItemError, LeaseLost, Outgoing, Side


def enqueue_outgoing_in(
    conn: sqlite3.Connection, now: float, message: Outgoing, *, epoch: int | None = None
) -> int | None:
    """Queue `message` in the outbox (see `enqueue_in`); None when its key was queued."""
    return enqueue_in(
        conn,
        now,
        entrance=message.entrance,
        target=message.target,
        text=message.text,
        payload=message.payload,
        dedupe_key=message.dedupe_key,
        epoch=epoch,
    )


def _check_lease(conn: sqlite3.Connection, now: float, name: str, holder: str, epoch: int) -> None:
    row = conn.execute(
        "SELECT 1 FROM leases WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > ?",
        (name, holder, epoch, now),
    ).fetchone()
    if row is None:
        raise LeaseLost(f"lease {name} epoch {epoch} is no longer held by {holder}")


_SIDE = (
    "SELECT i.*, p.name AS person_name, c.external_id AS conversation_external_id,"
    " c.kind AS conversation_kind FROM intentions i"
    " LEFT JOIN people p ON p.id = i.person_id"
    " LEFT JOIN conversations c ON c.id = i.conversation_id"
)


def items_details_in(conn: sqlite3.Connection, item_ids: list[int]) -> list[ItemDetails]:
    """Items with their intentions and the decision they contradict: three queries
    whatever the count (a scheduler tick takes 100 at a time); in the order of `item_ids`,
    unknown ids left out."""
    if not item_ids:
        return []
    ids = json.dumps(item_ids)
    items = {
        row["id"]: row
        for row in conn.execute(
            "SELECT * FROM conflicts WHERE id IN (SELECT value FROM json_each(?))", (ids,)
        )
    }
    sides = json.dumps(
        [row[key] for row in items.values() for key in ("intention_a", "intention_b")]
    )
    intentions = {
        row["id"]: Side(
            rows.intention(row), row["conversation_external_id"], row["conversation_kind"]
        )
        for row in conn.execute(f"{_SIDE} WHERE i.id IN (SELECT value FROM json_each(?))", (sides,))
    }
    earlier = json.dumps([row["decision_of"] for row in items.values()])
    decisions = {
        row["id"]: rows.conflict(row)
        for row in conn.execute(
            "SELECT * FROM conflicts WHERE id IN (SELECT value FROM json_each(?))", (earlier,)
        )
    }
    found = []
    for item_id in item_ids:
        row = items.get(item_id)
        if row is None:
            continue
        found.append(
            ItemDetails(
                rows.conflict(row),
                [
                    intentions[side]
                    for side in (row["intention_a"], row["intention_b"])
                    if side is not None and side in intentions
                ],
                decisions.get(row["decision_of"]),
            )
        )
    return found


def item_details_in(conn: sqlite3.Connection, item_id: int) -> ItemDetails | None:
    found = items_details_in(conn, [item_id])
    return found[0] if found else None


class CoordinatorStore(Database):
    async def item_details(self, item_id: int) -> ItemDetails | None:
        return await self.read(item_details_in, item_id)

    async def pending_details(self) -> list[ItemDetails]:
        def run(conn: sqlite3.Connection) -> list[ItemDetails]:
            ids = conn.execute(
                "SELECT id FROM conflicts WHERE status IN ('open', 'surfaced') ORDER BY id"
            ).fetchall()
            return items_details_in(conn, [r["id"] for r in ids])

        return await self.read(run)

    async def decide_item(
        self,
        item_id: int,
        *,
        status: str,
        choice: str,
        resolution: str,
        note: str | None,
        actor: str,
        intention_statuses: dict[int, str],
        kept: list[str],
        outgoing: list[Outgoing],
    ) -> None:
        """Record a decision, set the intentions' statuses, queue what it sends: one transaction."""

        def run(conn: sqlite3.Connection) -> None:
            now = self.now
            changed = conn.execute(
                "UPDATE conflicts SET status = :status, choice = :choice,"
                " resolution = :resolution, note = :note, kept = :kept, resolved_by = :actor,"
                " resolved_at = :now WHERE id = :id AND status IN ('open', 'surfaced')",
                {
                    "status": status,
                    "choice": choice,
                    "resolution": resolution,
                    "note": note,
                    "kept": json.dumps(kept),
                    "actor": actor,
                    "now": now,
                    "id": item_id,
                },
            ).rowcount
            if not changed:
                raise ItemError(f"item {item_id} is not pending any more")
            for intention_id, new_status in intention_statuses.items():
                conn.execute(
                    "UPDATE intentions SET status = ?, updated_at = ? WHERE id = ?"
                    " AND status IN ('open', 'conflicted', 'resolved')",
                    (new_status, now, intention_id),
                )
            for message in outgoing:
                enqueue_in(
                    conn,
                    now,
                    entrance=message.entrance,
                    target=message.target,
                    text=message.text,
                    payload=message.payload,
                    dedupe_key=message.dedupe_key,
                )
            audit_in(
                conn,
                now,
                actor,
                f"item.{status}",
                str(item_id),
                {"choice": choice, "note": note, "resolution": resolution},
            )

        await self.write(run)

    async def latest_conversation(
        self, entrance: str, *, kind: str | None = None
    ) -> tuple[str, str] | None:
        """(external id, kind) of the most recently active conversation on an entrance."""

        def run(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute(
                "SELECT c.external_id, c.kind FROM conversations c"
                " WHERE c.entrance = :entrance AND (:kind IS NULL OR c.kind = :kind)"
                " ORDER BY (SELECT max(m.id) FROM messages m WHERE m.conversation_id = c.id) DESC"
                " LIMIT 1",
                {"entrance": entrance, "kind": kind},
            ).fetchone()
            return (row["external_id"], row["kind"]) if row else None

        return await self.read(run)

    # The scheduler's side -----------------------------------------------------------------

    async def items_to_surface(self, limit: int = 100) -> list[ItemDetails]:
        return await self._items_where("status = 'open' ORDER BY id LIMIT ?", (limit,))

    async def items_to_remind(self, limit: int = 100) -> list[ItemDetails]:
        return await self._items_where(
            "status = 'surfaced' AND next_remind_at <= ? ORDER BY next_remind_at LIMIT ?",
            (self.now, limit),
        )

    async def items_to_escalate(self, limit: int = 100) -> list[ItemDetails]:
        """Pending items one of whose intentions is already due, not yet escalated."""
        return await self._items_where(
            "status = 'surfaced' AND escalated_at IS NULL AND due_at < ? ORDER BY due_at LIMIT ?",
            (self.now, limit),
        )

    async def _items_where(self, where: str, params: tuple[Any, ...]) -> list[ItemDetails]:
        """Details of the conflicts rows matching `where` (a fixed clause of this module)."""

        def run(conn: sqlite3.Connection) -> list[ItemDetails]:
            ids = conn.execute(f"SELECT id FROM conflicts WHERE {where}", params).fetchall()
            return items_details_in(conn, [r["id"] for r in ids])

        return await self.read(run)

    async def mark_item_sent(
        self,
        item_id: int,
        what: str,
        message: Outgoing,
        *,
        lease: str,
        holder: str,
        epoch: int,
        remind_after_s: float,
    ) -> bool:
        """Queue one scheduler message about an item and stamp the item: one fenced write.

        what: 'surfaced' | 'reminded' | 'escalated'. Returns False if it was already sent.
        """
        sent = await self.mark_items_sent(
            [(item_id, message)],
            what,
            lease=lease,
            holder=holder,
            epoch=epoch,
            remind_after_s=remind_after_s,
        )
        return bool(sent)

    async def mark_items_sent(
        self,
        items: list[tuple[int, Outgoing]],
        what: str,
        *,
        lease: str,
        holder: str,
        epoch: int,
        remind_after_s: float,
    ) -> list[int]:
        """`mark_item_sent` for many items in one fenced transaction (a tick's batch: one
        commit instead of one per item); returns the ids whose message was newly queued."""
        column = {
            "surfaced": "surfaced_at",
            "reminded": "reminded_at",
            "escalated": "escalated_at",
        }[what]
        if not items:
            return []

        def run(conn: sqlite3.Connection) -> list[int]:
            now = self.now
            _check_lease(conn, now, lease, holder, epoch)
            queued = []
            for item_id, message in items:
                outbox_id = enqueue_outgoing_in(conn, now, message, epoch=epoch)
                conn.execute(
                    f"UPDATE conflicts SET {column} = :now, epoch = :epoch,"
                    " status = COALESCE(:status, status),"
                    " next_remind_at = CASE WHEN :what = 'escalated' THEN next_remind_at"
                    "   ELSE :now + :remind END WHERE id = :id",
                    {
                        "now": now,
                        "epoch": epoch,
                        "status": "surfaced" if what == "surfaced" else None,
                        "what": what,
                        "remind": remind_after_s,
                        "id": item_id,
                    },
                )
                if outbox_id is not None:
                    queued.append(item_id)
            return queued

        return await self.write(run)

    async def fenced_enqueue(
        self, message: Outgoing, *, lease: str, holder: str, epoch: int
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            now = self.now
            _check_lease(conn, now, lease, holder, epoch)
            return enqueue_outgoing_in(conn, now, message, epoch=epoch) is not None

        return await self.write(run)
