"""People, identities, conversations and messages in memory.db.

Privacy lives in these queries: a private (DM) row is returned only to an audience of the
same person, or to the coordinator (audience None means "everything").
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace

from bot.memory import rows
from bot.memory.database import Database
from bot.memory.rate_buckets import EarlyTake
from bot.memory.records import Admission, BucketSpec, Recorded, SentMessage, SentSince
from bot.models import Incoming, Message

_MESSAGE_COLUMNS = """
    m.*, c.external_id AS conversation_external_id, c.kind AS conversation_kind,
    p.name AS person_name
"""
_MESSAGE_FROM = """
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    LEFT JOIN people p ON p.id = m.person_id
"""
_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str, *, any_word: bool = True) -> str | None:
    """Turn free text into a safe FTS5 query of quoted words (None when nothing to search)."""
    words = [word for word in _WORD.findall(text.lower()) if len(word) > 1]
    if not words:
        return None
    quoted = [f'"{word}"' for word in dict.fromkeys(words)]
    return (" OR " if any_word else " ").join(quoted)


def identity_in(
    conn: sqlite3.Connection,
    now: float,
    entrance: str,
    external_id: str,
    display_name: str | None,
    is_bot: bool,
) -> tuple[int, int]:
    """(identity id, person id) for a platform account, creating both on first sight."""
    row = conn.execute(
        "SELECT id, person_id FROM identities WHERE entrance = ? AND external_id = ?",
        (entrance, external_id),
    ).fetchone()
    if row:
        return row["id"], row["person_id"]
    person = conn.execute(
        "INSERT INTO people (name, created_at) VALUES (?, ?)",
        (display_name or external_id, now),
    ).lastrowid
    identity = conn.execute(
        "INSERT INTO identities (entrance, external_id, display_name, person_id, is_bot,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (entrance, external_id, display_name, person, int(is_bot), now),
    ).lastrowid
    assert identity is not None and person is not None
    return identity, person


# The persona's outgoing messages committed since a process last looked (every entrance's,
# in id order): an indexed range over outgoing_log, which a trigger fills and pruning keeps
# to about two days. Each process keeps its own word index of them (bot.guard.EchoWindow).
SENT_SINCE_SQL = """
    SELECT l.message_id, l.at, m.conversation_id, m.text FROM outgoing_log l
    JOIN messages m ON m.id = l.message_id
    WHERE l.message_id > :after AND l.at > :since
    ORDER BY l.message_id
"""


def ask_sent_in(conn: sqlite3.Connection, sent: SentSince) -> sqlite3.Cursor:
    return conn.execute(SENT_SINCE_SQL, {"after": sent.after, "since": sent.since})


def sent_messages(rows: Iterable[sqlite3.Row]) -> list[SentMessage]:
    """`ask_sent_in`'s rows, oldest first."""
    return [SentMessage(row[0], row[1], row[2], row[3]) for row in rows]


def ask_conversation_in(
    conn: sqlite3.Connection, entrance: str, external_id: str
) -> sqlite3.Cursor:
    return conn.execute(
        "SELECT id, person_id FROM conversations WHERE entrance = ? AND external_id = ?",
        (entrance, external_id),
    )


def conversation_in(
    conn: sqlite3.Connection,
    now: float,
    entrance: str,
    external_id: str,
    kind: str,
    title: str | None,
    person_id: int | None,
    asked: sqlite3.Cursor | None = None,
) -> tuple[int, int | None]:
    """(conversation id, DM partner) for a platform conversation, creating it on first sight.
    `asked`: `ask_conversation_in`'s read for it, issued by the caller with others."""
    row = (asked or ask_conversation_in(conn, entrance, external_id)).fetchone()
    if row:
        return row["id"], row["person_id"]
    partner = person_id if kind == "dm" else None
    created = conn.execute(
        "INSERT INTO conversations (entrance, external_id, kind, title, person_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (entrance, external_id, kind, title, partner, now),
    ).lastrowid
    assert created is not None
    return created, partner


@dataclass(frozen=True)
class Inserted:
    """An incoming message's INSERT (ON CONFLICT DO NOTHING) and where it goes: whether it
    made a row (`created`) is read from `cursor` once asked, which on PostgreSQL may be
    after the COMMIT (the INSERT then travels with it: one round trip fewer a turn)."""

    cursor: sqlite3.Cursor
    conversation_id: int
    person_id: int
    identity_id: int
    sent: list[SentMessage] | None = None  # what `SentSince` asked for
    admission: Admission | None = None  # the tokens taken, when asked (`EarlyTake`)

    @property
    def created(self) -> bool:
        return bool(self.cursor.rowcount)

    def recorded(self) -> Recorded:
        """The new row (only when `created`)."""
        assert self.cursor.lastrowid is not None
        return Recorded(
            self.cursor.lastrowid,
            self.conversation_id,
            self.person_id,
            self.identity_id,
            created=True,
            sent=self.sent,
            admission=self.admission,
        )


def insert_incoming_in(
    conn: sqlite3.Connection,
    now: float,
    incoming: Incoming,
    instance_id: str,
    status: str = "received",
    sent: SentSince | None = None,
    take_tokens: list[BucketSpec] | None = None,
) -> Inserted:
    """The identity, the conversation and the INSERT of an incoming message, with nothing
    read back from the INSERT (see `Inserted`); what `sent` asks for; and a token from each
    of `take_tokens`' buckets (`PERSON_KEY` names the speaker's), unless the message was
    recorded before or the guard must decide (`EarlyTake`)."""
    # Issued before the identity's read, which they do not depend on: on PostgreSQL all
    # travel in one message (with the transaction's BEGIN), a round trip fewer each.
    sent_read = ask_sent_in(conn, sent) if sent is not None else None
    conversation_read = ask_conversation_in(conn, incoming.entrance, incoming.conversation_id)
    early = (
        EarlyTake(
            conn,
            take_tokens,
            incoming.entrance,
            incoming.author.external_id,
            incoming.conversation_id,
            incoming.platform_message_id,
        )
        if take_tokens is not None
        else None
    )
    identity, person = identity_in(
        conn,
        now,
        incoming.entrance,
        incoming.author.external_id,
        incoming.author.display_name,
        incoming.author.is_bot,
    )
    conversation, _ = conversation_in(
        conn,
        now,
        incoming.entrance,
        incoming.conversation_id,
        incoming.conversation_kind,
        incoming.conversation_title,
        person,
        conversation_read,
    )
    reply_to = None
    if incoming.reply_to_platform_id:
        found = conn.execute(
            "SELECT id FROM messages WHERE entrance = ? AND platform_message_id = ?",
            (incoming.entrance, incoming.reply_to_platform_id),
        ).fetchone()
        reply_to = found["id"] if found else None
    cursor = conn.execute(
        "INSERT INTO messages (conversation_id, instance_id, entrance, direction, identity_id,"
        " person_id, text, created_at, platform_message_id, reply_to, visibility, status)"
        " VALUES (:conversation, :instance, :entrance, 'in', :identity, :person, :text, :at,"
        " :platform_id, :reply_to, :visibility, :status)"
        " ON CONFLICT (entrance, platform_message_id) DO NOTHING",
        {
            "conversation": conversation,
            "instance": instance_id,
            "entrance": incoming.entrance,
            "identity": identity,
            "person": person,
            "text": incoming.text,
            "at": incoming.received_at.timestamp(),
            "platform_id": incoming.platform_message_id,
            "reply_to": reply_to,
            "visibility": incoming.visibility,
            "status": status,
        },
    )
    found = sent_messages(sent_read) if sent_read is not None else None
    admission = early.take(conn, now, person) if early is not None else None
    return Inserted(cursor, conversation, person, identity, found, admission)


def record_incoming_in(
    conn: sqlite3.Connection,
    now: float,
    incoming: Incoming,
    instance_id: str,
    status: str = "received",
) -> Recorded:
    """Record a platform message once, inside the caller's transaction: the new row, or
    the one the same platform id already has."""
    inserted = insert_incoming_in(conn, now, incoming, instance_id, status)
    if inserted.created:
        return inserted.recorded()
    existing = conn.execute(
        "SELECT id FROM messages WHERE entrance = ? AND platform_message_id = ?",
        (incoming.entrance, incoming.platform_message_id),
    ).fetchone()
    return Recorded(
        existing["id"],
        inserted.conversation_id,
        inserted.person_id,
        inserted.identity_id,
        created=False,
    )


class ConversationStore(Database):
    async def record_incoming(
        self,
        incoming: Incoming,
        instance_id: str,
        *,
        status: str = "received",
        sent: SentSince | None = None,
        take_tokens: list[BucketSpec] | None = None,
    ) -> Recorded:
        """Record a platform message once: the same platform id twice is one row.

        `status`: 'received' (to be answered: a turn takes it up, or the next holder of the
        entrance after a crash) or 'observed' (not addressed to the persona: kept so every
        instance sees it, never answered). `sent`: the persona's outgoing messages to read
        in the same transaction (the guard's, `Recorded.sent`); `take_tokens`: the rate
        limits' buckets to take a token from in it (the guard's, `Recorded.admission`)."""
        inserted = await self.write(
            insert_incoming_in, self.now, incoming, instance_id, status, sent, take_tokens
        )
        if inserted.created:
            return inserted.recorded()
        # Recorded before (a platform's redelivery, rare): its row, read in a write of its
        # own, as `record_incoming_in` reads it.
        found = await self.write(record_incoming_in, self.now, incoming, instance_id, status)
        return replace(found, sent=inserted.sent)

    async def record_many(self, incomings: list[Incoming], instance_id: str) -> int:
        """Record a batch in one transaction (imports, benchmarks); returns rows created."""

        def run(conn: sqlite3.Connection) -> int:
            now = self.now
            return sum(
                record_incoming_in(conn, now, incoming, instance_id).created
                for incoming in incomings
            )

        return await self.write(run)

    async def set_message_status(self, message_id: int, status: str) -> None:
        await self.write(
            lambda conn: conn.execute(
                "UPDATE messages SET status = ? WHERE id = ?", (status, message_id)
            )
        )

    async def message(self, message_id: int) -> Message | None:
        row = await self.read(
            lambda conn: conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} {_MESSAGE_FROM} WHERE m.id = ?", (message_id,)
            ).fetchone()
        )
        return rows.message(row) if row else None

    async def search_messages(
        self, text: str, *, audience: int | None = None, limit: int = 20
    ) -> list[Message]:
        """Full-text search, newest first; audience None sees everything (coordinator)."""
        query = fts_query(text, any_word=False)
        if query is None:
            return []

        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} {_MESSAGE_FROM}"
                " WHERE m.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q)"
                " AND (:audience IS NULL OR m.visibility = 'group' OR m.person_id = :audience)"
                " ORDER BY m.id DESC LIMIT :limit",
                {"q": query, "audience": audience, "limit": limit},
            ).fetchall()

        return [rows.message(row) for row in await self.read(run)]

    async def message_log(self, limit: int = 20) -> list[Message]:
        found = await self.read(
            lambda conn: conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} {_MESSAGE_FROM} ORDER BY m.id DESC LIMIT ?", (limit,)
            ).fetchall()
        )
        return [rows.message(row) for row in found]
