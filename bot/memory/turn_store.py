"""Storing one turn: the reply, its provenance, intentions, notes, in one transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.memory.coordinator_store import enqueue_outgoing_in
from bot.memory.database import Database, audit_in
from bot.memory.intention_store import add_intention_in
from bot.memory.outbox_store import Claimed, NewRow, enqueue_claimed_in
from bot.memory.records import Outgoing, Provenance, StoredTurn, TurnRecord, Unfinished
from bot.memory.reminder_store import set_intention_plan_in
from bot.models import Author, Incoming


def store_turn_in(conn: sqlite3.Connection, now: float, turn: TurnRecord) -> StoredTurn:
    """Store one turn inside the caller's transaction."""
    return _store_turn_in(conn, now, turn).stored()


@dataclass(frozen=True)
class _Storing:
    """A turn stored but for the ids its INSERTs give, read once asked (`stored`): on
    PostgreSQL after the COMMIT, which those INSERTs then travel with."""

    reply: NewRow
    intention_ids: list[int]
    conflicts_found: int
    done: list[int]
    claimed: Claimed | None

    def stored(self) -> StoredTurn:
        outbox = self.claimed.item() if self.claimed is not None else None
        return StoredTurn(
            self.reply.id, self.intention_ids, self.conflicts_found, self.done, outbox
        )


# The reply's id inside its transaction: the newest message of its conversation, which
# under the write lock is the one just inserted (SQLite's BEGIN IMMEDIATE; on PostgreSQL
# every message's id is drawn inside the advisory lock, from an identity of CACHE 1). Its
# outbox row and reply_context name it so, not by the id its INSERT gives: on PostgreSQL
# the INSERT then goes with them and the COMMIT in one message, where reading the id back
# first cost a round trip a turn. One backward step of messages_conversation, whatever the
# statistics say (a filter on reply_to here had PostgreSQL read the whole conversation:
# 18 ms at 1M messages).
REPLY_ID_SQL = "(SELECT id FROM messages WHERE conversation_id = ? ORDER BY id DESC LIMIT 1)"


def _store_turn_in(conn: sqlite3.Connection, now: float, turn: TurnRecord) -> _Storing:
    """`store_turn_in`, the ids its INSERTs give not read back yet."""
    inserted = conn.execute(
        "INSERT INTO messages (conversation_id, instance_id, entrance, direction, person_id,"
        " text, created_at, reply_to, visibility, status, soul_version, model)"
        " VALUES (:conversation, :instance, :entrance, 'out', :person, :text, :now, :reply_to,"
        " :visibility, :status, :soul, :model)",
        {
            "conversation": turn.conversation_id,
            "instance": turn.instance_id,
            "entrance": turn.entrance,
            "person": turn.person_id if turn.visibility == "private" else None,
            "text": turn.reply_text,
            "now": now,
            "reply_to": turn.incoming_id,
            "visibility": turn.visibility,
            "soul": turn.soul_version,
            "model": turn.model,
            # 'pending' until the platform took it (`mark_sent`), when it goes out from here.
            "status": "pending" if turn.delivery is not None else "sent",
        },
    )
    reply = NewRow(REPLY_ID_SQL, (turn.conversation_id,), inserted)
    claimed = None
    if turn.delivery is not None:
        claimed = enqueue_claimed_in(
            conn,
            now,
            turn.instance_id,
            entrance=turn.entrance,
            target=turn.delivery.target,
            text=turn.reply_text,
            payload=turn.delivery.payload,
            dedupe_key=turn.delivery.dedupe_key,
            out=reply,
        )
    if turn.context_rows:
        conn.execute(
            f"INSERT INTO reply_context (message_id, used) VALUES ({reply.sql}, ?)",
            (*reply.params, pack_context(turn.context_rows)),
        )
    conn.execute(
        "UPDATE messages SET status = ? WHERE id = ?",
        ("answered" if turn.answered else "unanswered", turn.incoming_id),
    )
    intention_ids, conflicts = [], 0
    for new in turn.intentions:
        intention_id, found = add_intention_in(conn, now, new)
        set_intention_plan_in(conn, intention_id, new)
        intention_ids.append(intention_id)
        conflicts += found
    conn.executemany(
        "INSERT INTO notes (instance_id, conversation_id, person_id, visibility, text,"
        " source_message_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                turn.instance_id,
                turn.conversation_id,
                turn.person_id,
                turn.visibility,
                note,
                turn.incoming_id,
                now,
            )
            for note in turn.notes
        ],
    )
    done: list[int] = []
    if turn.done:
        marks = ", ".join("?" * len(turn.done))
        done = [
            row["id"]
            for row in conn.execute(
                f"UPDATE intentions SET status = 'done', updated_at = ? WHERE id IN ({marks})"
                " AND status IN ('open', 'conflicted', 'resolved') AND person_id = ?"
                " RETURNING id",
                (now, *turn.done, turn.person_id),
            )
        ]
    if turn.followed_up is not None:
        conn.execute(
            "UPDATE intentions SET follow_up = 'sent', updated_at = :now,"
            " status = CASE WHEN status IN ('open', 'resolved') THEN 'done' ELSE status END"
            " WHERE id = :id",
            {"now": now, "id": turn.followed_up},
        )
    if turn.person_name:
        conn.execute(
            "UPDATE people SET name = :name WHERE id = :person",
            {"name": turn.person_name, "person": turn.person_id},
        )
    if turn.model:
        conn.execute(
            "INSERT INTO model_usage (at, instance_id, model, prompt_tokens, completion_tokens,"
            " cost_usd) VALUES (?, ?, ?, ?, ?, ?)",
            (
                now,
                turn.instance_id,
                turn.model,
                turn.prompt_tokens,
                turn.completion_tokens,
                turn.cost_usd,
            ),
        )
    return _Storing(reply, intention_ids, conflicts, done, claimed)


def pack_context(rows: Iterable[tuple[str, int]]) -> str:
    """A reply's context rows as reply_context keeps them: JSON, {kind: [row ids]}."""
    used: dict[str, set[int]] = {}
    for kind, row_id in rows:
        used.setdefault(kind, set()).add(row_id)
    return json.dumps(
        {kind: sorted(ids) for kind, ids in sorted(used.items())}, separators=(",", ":")
    )


def unpack_context(packed: str | None) -> list[tuple[str, int]]:
    """`pack_context` undone, ordered by kind, then row id (none: no row stored)."""
    used: dict[str, list[int]] = json.loads(packed) if packed else {}
    return [(kind, row_id) for kind in sorted(used) for row_id in sorted(used[kind])]


_UNFINISHED = """
    SELECT m.id, m.text, m.created_at, m.platform_message_id, m.status, m.attempts,
           c.external_id AS conversation, c.kind, c.title,
           i.external_id AS author, i.display_name, i.is_bot,
           r.platform_message_id AS replied
    FROM messages m INDEXED BY messages_unfinished
    JOIN conversations c ON c.id = m.conversation_id
    JOIN identities i ON i.id = m.identity_id
    LEFT JOIN messages r ON r.id = m.reply_to
    WHERE m.entrance = :entrance AND m.direction = 'in'
      AND m.status IN ('received', 'unanswered')
    ORDER BY m.id
"""


def _unfinished(row: sqlite3.Row, entrance: str) -> Unfinished:
    incoming = Incoming(
        entrance=entrance,
        conversation_id=row["conversation"],
        conversation_kind=row["kind"],
        conversation_title=row["title"],
        author=Author(
            external_id=row["author"],
            display_name=row["display_name"],
            is_bot=bool(row["is_bot"]),
        ),
        text=row["text"],
        platform_message_id=row["platform_message_id"],
        reply_to_platform_id=row["replied"],
        received_at=datetime.fromtimestamp(row["created_at"], UTC),
    )
    return Unfinished(row["id"], incoming, row["created_at"], row["attempts"], row["status"])


class TurnStore(Database):
    async def take_unfinished(
        self,
        entrance: str,
        *,
        stale_after_s: float,
        retry_after_s: float,
        attempts: int,
        give_up_after_s: float,
        missed_notice: Callable[[list[Unfinished]], Outgoing | None],
    ) -> list[Unfinished]:
        """The turns of `entrance` to run again now, each counted as one more attempt.

        A 'received' message older than `stale_after_s` was left by a process that died
        mid-turn; an 'unanswered' one (every model failed) is due `retry_after_s` after it
        arrived, doubling per attempt. Past `give_up_after_s` or `attempts`, it is marked
        'missed' instead, and `missed_notice` (for the coordinator) queued once, in the
        same transaction.
        """

        def run(conn: sqlite3.Connection) -> list[Unfinished]:
            now = self.now
            due, missed = [], []
            for row in conn.execute(_UNFINISHED, {"entrance": entrance}).fetchall():
                found = _unfinished(row, entrance)
                age = now - found.at
                if age > give_up_after_s or found.attempts >= attempts:
                    missed.append(found)
                elif row["status"] == "received" and age >= stale_after_s:
                    due.append(found)
                elif row["status"] == "unanswered":
                    if age >= retry_after_s * 2 ** max(found.attempts - 1, 0):
                        due.append(found)
            conn.executemany(
                "UPDATE messages SET attempts = attempts + 1 WHERE id = ?",
                [(found.message_id,) for found in due],
            )
            if missed:
                conn.executemany(
                    "UPDATE messages SET status = 'missed' WHERE id = ?",
                    [(found.message_id,) for found in missed],
                )
                for found in missed:
                    audit_in(conn, now, entrance, "turn.missed", str(found.message_id))
                notice = missed_notice(missed)
                if notice is not None:
                    enqueue_outgoing_in(conn, now, notice)
            return due

        return await self.write(run)

    async def store_turn(self, turn: TurnRecord) -> StoredTurn:
        # The ids the turn's INSERTs gave are read after the COMMIT (`_Storing`): on
        # PostgreSQL the reply's rows and the COMMIT go in one message.
        return (await self.write(_store_turn_in, self.now, turn)).stored()

    async def incoming_status(self, message_id: int) -> str | None:
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT status FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
        )
        return row["status"] if row else None

    async def reply_to(self, incoming_id: int) -> int | None:
        """The outgoing message that answered an incoming one, if any."""
        row = await self.read(
            lambda conn: conn.execute(
                "SELECT id FROM messages WHERE reply_to = ? AND direction = 'out'"
                " ORDER BY id LIMIT 1",
                (incoming_id,),
            ).fetchone()
        )
        return row["id"] if row else None

    async def provenance(self, message_id: int) -> Provenance | None:
        def run(conn: sqlite3.Connection) -> Provenance | None:
            row = conn.execute(
                "SELECT id, soul_version, model FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                return None
            used = conn.execute(
                "SELECT used FROM reply_context WHERE message_id = ?", (message_id,)
            ).fetchone()
            return Provenance(
                row["id"], row["soul_version"], row["model"], unpack_context(used and used[0])
            )

        return await self.read(run)
