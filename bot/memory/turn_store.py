"""Storing one turn: the reply, its provenance, intentions, notes, in one transaction."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from bot.memory.database import Database
from bot.memory.intention_store import NewIntention, add_intention_in


@dataclass(frozen=True)
class TurnRecord:
    """Everything one turn writes."""

    incoming_id: int
    conversation_id: int
    entrance: str
    instance_id: str
    person_id: int
    visibility: str
    reply_text: str
    soul_version: int | None
    model: str | None
    answered: bool = True
    context_rows: list[tuple[str, int]] = field(default_factory=list)
    intentions: list[NewIntention] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class StoredTurn:
    message_id: int
    intention_ids: list[int]
    conflicts_found: int
    done: list[int]


def store_turn_in(conn: sqlite3.Connection, now: float, turn: TurnRecord) -> StoredTurn:
    message_id = conn.execute(
        "INSERT INTO messages (conversation_id, instance_id, entrance, direction, person_id,"
        " text, created_at, reply_to, visibility, status, soul_version, model)"
        " VALUES (:conversation, :instance, :entrance, 'out', :person, :text, :now, :reply_to,"
        " :visibility, 'sent', :soul, :model)",
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
        },
    ).lastrowid
    assert message_id is not None
    conn.executemany(
        "INSERT OR IGNORE INTO message_context (message_id, kind, row_id) VALUES (?, ?, ?)",
        [(message_id, kind, row_id) for kind, row_id in turn.context_rows],
    )
    conn.execute(
        "UPDATE messages SET status = ? WHERE id = ?",
        ("answered" if turn.answered else "unanswered", turn.incoming_id),
    )
    intention_ids, conflicts = [], 0
    for new in turn.intentions:
        intention_id, found = add_intention_in(conn, now, new)
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
    return StoredTurn(message_id, intention_ids, conflicts, done)


@dataclass(frozen=True)
class Provenance:
    message_id: int
    soul_version: int | None
    model: str | None
    rows: list[tuple[str, int]]


class TurnStore(Database):
    async def store_turn(self, turn: TurnRecord) -> StoredTurn:
        return await self.write(store_turn_in, self.now, turn)

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
                "SELECT kind, row_id FROM message_context WHERE message_id = ?"
                " ORDER BY kind, row_id",
                (message_id,),
            ).fetchall()
            return Provenance(
                row["id"], row["soul_version"], row["model"], [(r[0], r[1]) for r in used]
            )

        return await self.read(run)
