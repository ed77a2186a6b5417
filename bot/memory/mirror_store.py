"""The mirror view: what a turn's context may know, read in one snapshot.

Privacy is enforced here, in SQL, for one `Audience` (bot.models): a row's text comes back
only when the row belongs to the audience's own conversation, or the audience is a private
chat and the row is that person's (any linked account) or a group's, or the audience is the
coordinator in their own private chat. Otherwise the row comes back with its text NULL,
and the context renders it as a redacted line. Decisions come back with the sides the
audience may not see blanked, and without the sentence that quotes them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot.memory.conversation_store import fts_query
from bot.memory.records import ViewLimits
from bot.memory.soul_store import NEWEST_SOUL_ID, active_soul_in
from bot.memory.vector_store import RecallRequest, VectorStore
from bot.models import (
    Audience,
    DecisionSide,
    TurnView,
    ViewDecision,
    ViewInstance,
    ViewIntention,
    ViewMessage,
    ViewNote,
    from_epoch,
)

# Words that say nothing about what to recall.
STOPWORDS = frozenset(
    """a an and are as at be but by can could did do does for from had has have he her him his
    how i if in is it its me my no not of on or our she so that the their them then there they
    this to us was we were what when where which who why will with would you your yes hi hello
    hey please thanks thank ok okay tell told say said about just like know""".split()
)


def visible(alias: str) -> str:
    """SQL: may the audience (:everyone, :conversation, :person) see row `alias`?"""
    return (
        f"(:everyone OR {alias}.conversation_id = :conversation OR (:person IS NOT NULL"
        f" AND ({alias}.visibility = 'group' OR {alias}.person_id = :person)))"
    )


def sees_other_conversations(audience: Audience, conversation_id: int) -> bool:
    """Can `visible` let through a row of a conversation other than `conversation_id`? A
    group's audience (its own conversation) cannot: a read of other conversations' rows
    for it need not run (word recall read 200 candidates for nothing: 0.3-0.4 ms at 1M)."""
    private = audience.everyone or audience.person_id is not None
    return private or audience.conversation_id not in (None, conversation_id)


def sees_any_conversation(audience: Audience) -> bool:
    """Can `visible` let through any row with a conversation at all? A reply going to
    someone other than the verified correspondent (no conversation, no person) cannot."""
    private = audience.everyone or audience.person_id is not None
    return private or audience.conversation_id is not None


_VISIBLE_TEXT = f"CASE WHEN {visible('m')} THEN m.text END"
_VIEW_MESSAGE = f"""
    SELECT m.id, m.entrance, m.instance_id, c.kind AS conversation_kind, m.direction,
           p.name AS person_name, {_VISIBLE_TEXT} AS text, m.created_at
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id
    LEFT JOIN people p ON p.id = m.person_id
"""

# The newest messages of every instance (ViewLimits.recent_per_instance each: :skip is one
# less), newest first. Per instance, the id of its n-th newest message bounds an index
# range; CROSS JOIN keeps SQLite's loop over the few instances outside (joined the other
# way round, it walks the whole messages_instance index: a second at 1M messages).
RECENT_PER_INSTANCE_SQL = f"""{_VIEW_MESSAGE}
    WHERE m.id IN (
        SELECT r.id FROM instances CROSS JOIN messages r
        WHERE r.instance_id = instances.id AND r.id >= coalesce(
            (SELECT x.id FROM messages x WHERE x.instance_id = instances.id
             ORDER BY x.id DESC LIMIT 1 OFFSET :skip), 0))
    ORDER BY m.id DESC
"""


def _word_recall(view: str, alias: str, table: str, also: str = "") -> str:
    """The newest rows of `table` matching the words :q (its 200 newest matches, then
    those the audience may see), the :limit newest first. (PostgreSQL's dialect reads the
    matches as the join's table: bot/memory/pg_dialect.py `_NEWEST_MATCHES`.)"""
    return (
        f"{view} WHERE {alias}.id IN (SELECT rowid FROM {table}_fts"
        f"   WHERE {table}_fts MATCH :q ORDER BY rowid DESC LIMIT 200){also}"
        f" AND {visible(alias)}"
        f" ORDER BY {alias}.id DESC LIMIT :limit"
    )


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


_VIEW_NOTE = (
    "SELECT n.id, n.instance_id, p.name AS person_name, n.text, n.created_at"
    " FROM notes n LEFT JOIN people p ON p.id = n.person_id"
)
# A turn's word recall: messages of other conversations, and notes.
_WORD_RECALL_MESSAGES = _word_recall(
    _VIEW_MESSAGE, "m", "messages", also=" AND m.conversation_id <> :here"
)
_WORD_RECALL_NOTES = _word_recall(_VIEW_NOTE, "n", "notes")


def _view_note(row: sqlite3.Row) -> ViewNote:
    return ViewNote(
        id=row["id"],
        instance_id=row["instance_id"],
        person_name=row["person_name"],
        text=row["text"],
        at=_at(row["created_at"]),
    )


def _view_message(row: sqlite3.Row) -> ViewMessage:
    at = _at(row["created_at"])
    return ViewMessage(
        id=row["id"],
        entrance=row["entrance"],
        instance_id=row["instance_id"],
        conversation_kind=row["conversation_kind"],
        direction=row["direction"],
        person_name=row["person_name"],
        text=row["text"],
        at=at,
    )


def _view_instance(
    row: sqlite3.Row, recent: list[ViewMessage], now: float, dead_after_s: float
) -> ViewInstance:
    if row["status"] == "alive" and now - row["last_seen"] < dead_after_s:
        status, since = "alive", row["status_since"]
    elif row["status"] == "alive":  # heartbeat stopped; the scheduler has not noticed yet
        status, since = "dead", row["last_seen"]
    else:
        status, since = row["status"], row["status_since"]
    since_at, last_seen = from_epoch(since), from_epoch(row["last_seen"])
    assert since_at is not None and last_seen is not None
    return ViewInstance(
        id=row["id"],
        entrance=row["entrance"],
        alive=status == "alive",
        status=status,
        since=since_at,
        last_seen=last_seen,
        recent=recent,
    )


def _side(row: sqlite3.Row | None, label: str) -> DecisionSide:
    if row is None:  # the intention is gone: nothing of it to show
        return DecisionSide(label=label, text=None, kept=None, owner_instance="?")
    return DecisionSide(
        label=label,
        text=row["text"] if row["seen"] else None,
        kept={"resolved": True, "cancelled": False}.get(row["status"]),
        owner_instance=row["owner_instance"],
    )


def _view_decision(row: sqlite3.Row, intentions: dict[int, sqlite3.Row]) -> ViewDecision:
    sides = [_side(intentions.get(row["intention_a"]), "A")]
    if row["intention_b"] is not None:
        sides.append(_side(intentions.get(row["intention_b"]), "B"))
    seen = all(side.text is not None for side in sides)
    return ViewDecision(
        conflict_id=row["id"],
        # The subject, the sentence and the note quote the sides: only for an audience that
        # may read every side; others hear the decision from the sides they may see.
        subject=row["subject"] if seen else None,
        choice=row["choice"],
        resolution=row["resolution"] if seen else None,
        note=row["note"] if seen else None,
        status=row["status"],
        resolved_by=row["resolved_by"],
        resolved_at=from_epoch(row["resolved_at"]),
        sides=sides,
    )


def recall_query(text: str) -> str | None:
    words = [w for w in (fts_query(text) or "").replace('"', "").split(" OR ") if w]
    meaningful = [w for w in words if w not in STOPWORDS and len(w) > 2]
    return " OR ".join(f'"{w}"' for w in meaningful) or None


# The coordinator's latest decisions, newest first (`columns` of conflicts).
_DECIDED = (
    "SELECT {columns} FROM conflicts INDEXED BY conflicts_decided"
    " WHERE status IN ('resolved', 'dismissed') ORDER BY resolved_at DESC LIMIT :limit"
)


def visible_messages_in(
    conn: sqlite3.Connection, params: dict[str, Any], ids: list[int]
) -> Callable[[], dict[int, ViewMessage]]:
    """The messages among `ids` the audience in `params` may read (recall by meaning): the
    read is issued now, its rows read when the returned function is called."""
    if not ids:  # no hit to read back (a quarter of turns at 1M): no statement
        return dict
    found = conn.execute(
        f"{_VIEW_MESSAGE} WHERE m.id IN (SELECT value FROM json_each(:ids)) AND {visible('m')}",
        {**params, "ids": json.dumps(ids)},
    )
    return lambda: {row["id"]: _view_message(row) for row in found}


def visible_notes_in(
    conn: sqlite3.Connection, params: dict[str, Any], ids: list[int]
) -> Callable[[], dict[int, ViewNote]]:
    """The notes among `ids` the audience in `params` may read (recall by meaning), as
    `visible_messages_in`."""
    if not ids:  # no hit to read back (4 turns in 10 at 1M): no statement
        return dict
    found = conn.execute(
        f"{_VIEW_NOTE} WHERE n.id IN (SELECT value FROM json_each(:ids)) AND {visible('n')}",
        {**params, "ids": json.dumps(ids)},
    )
    return lambda: {row["id"]: _view_note(row) for row in found}


# The word indexes recall reads (FTS5 segments: a word query reads each segment's entry for
# each word, so its cost grows with their number). SQLite's own automerge leaves a log-like
# heap: at 1M messages (bench prefill) 18 segments of 8616 .. 1 pages; merged by the steps
# below (the scheduler's job) into one large one and a few small ones, the recall's word
# query (6 words, newest 200) went from 0.40 to 0.17 ms, 3 words 0.25 to 0.08 ms.
WORD_INDEXES = ("messages_fts", "notes_fts")
_USERMERGE = {
    index: f"SELECT v FROM {index}_config WHERE k = 'usermerge'" for index in WORD_INDEXES
}
_SET_USERMERGE = {
    index: f"INSERT INTO {index} ({index}, rank) VALUES ('usermerge', 2)" for index in WORD_INDEXES
}
_MERGE = {
    index: f"INSERT INTO {index} ({index}, rank) VALUES ('merge', :pages)" for index in WORD_INDEXES
}


def merge_word_index_in(conn: sqlite3.Connection, index: str, pages: int) -> bool:
    """One step of merging the segments of word index `index` (about `pages` pages written):
    True when it found segments to merge (there may be more), False when it found none.

    FTS5's 'merge' with a positive size carries on a merge under way, else merges the level
    holding the most segments, once it holds at least 'usermerge' of them: 2 here (FTS5's
    default, 4, leaves up to 3 per level), so that each merge's output, joining the next
    level, is merged again, up to the largest. A negative size ('optimize' in steps) is no
    use while others write: a new segment between two steps restarts it from scratch.
    Measured at 1M messages (as the prefill left them), two turns between steps: 100 pages
    a step took 5.1 ms at the median, p90 14, p99 87 (a word's list of messages is written
    whole, however long); 182 steps in all.
    """
    usermerge = conn.execute(_USERMERGE[index]).fetchone()
    if usermerge is None or usermerge[0] != 2:
        conn.execute(_SET_USERMERGE[index])
    before = conn.total_changes
    conn.execute(_MERGE[index], {"pages": pages})
    # FTS5's documented sign: total_changes grows by 2 or more when the merge did work.
    return conn.total_changes - before >= 2


class MirrorStore(VectorStore):
    async def turn_view(
        self,
        *,
        conversation_id: int,
        person_id: int,
        audience: Audience,
        incoming_id: int,
        text: str,
        dead_after_s: float,
        limits: ViewLimits | None = None,
        meaning: Any | None = None,
    ) -> TurnView:
        """One consistent read of everything a turn's context draws from memory. (On
        PostgreSQL its first word search runs beside it, in a snapshot taken as the view's
        is: bot/memory/pg_engine.py, `SideLine`.)

        `meaning`: the text's vector (bot.recall.meaning): recall fuses word matches with
        the nearest rows the audience may see (bot/memory/vector_store.py)."""
        limits = limits or ViewLimits()
        now = self.now

        def run(conn: sqlite3.Connection) -> TurnView:
            params = {
                "everyone": audience.everyone,
                "person": audience.person_id,
                "conversation": audience.conversation_id,
                "speaker": person_id,
                "here": conversation_id,
            }
            # Execute all, then fetch: the reads below depend on none of each other's rows,
            # so all are issued before any is consumed. SQLite runs each as it is issued
            # (its cursors are independent); PostgreSQL sends them in one message, one
            # round trip instead of ten (bot/memory/pg_engine.py, `PgConnection`).
            history_rows = conn.execute(
                f"{_VIEW_MESSAGE} WHERE m.conversation_id = :here AND m.id < :incoming"
                " ORDER BY m.id DESC LIMIT :limit",
                {**params, "incoming": incoming_id, "limit": limits.history},
            )
            elsewhere_rows = conn.execute(
                f"{_VIEW_MESSAGE} WHERE m.person_id = :speaker"
                " AND m.conversation_id <> :here"
                " ORDER BY m.id DESC LIMIT :limit",
                {**params, "limit": limits.elsewhere},
            )
            # Each instance's newest messages, all in one statement (not one per instance).
            recent_rows = (
                conn.execute(
                    RECENT_PER_INSTANCE_SQL, {**params, "skip": limits.recent_per_instance - 1}
                )
                if limits.recent_per_instance > 0
                else []
            )
            # Columns named, not *: PostgreSQL prepares this read (a prepared * would break
            # when a migration adds a column).
            instance_rows = conn.execute(
                "SELECT id, entrance, status, status_since, last_seen FROM instances ORDER BY id"
            )
            soul_row = conn.execute(NEWEST_SOUL_ID)
            # INDEXED BY (here and for decisions): with no statistics (no ANALYZE) the planner
            # picks the status indexes and sorts every active intention, every decision ever
            # made (5 ms at 8 000 decisions); the partial indexes of schema 004 hold exactly
            # these rows, in order.
            intention_rows = conn.execute(
                "SELECT i.id, i.owner_instance, i.entrance, i.person_id, p.name AS person_name,"
                f" CASE WHEN {visible('i')} THEN i.text END AS text,"
                f" CASE WHEN {visible('i')} THEN i.subject END AS subject,"
                " i.due_at, i.status, i.target_entrance"
                " FROM intentions i INDEXED BY intentions_active"
                " LEFT JOIN people p ON p.id = i.person_id"
                " WHERE i.status IN ('open', 'conflicted', 'resolved')"
                " ORDER BY i.id DESC LIMIT :limit",
                {**params, "limit": limits.intentions},
            )
            decided_rows = conn.execute(
                _DECIDED.format(
                    columns="id, intention_a, intention_b, status, subject, choice, note,"
                    " resolution, resolved_at, resolved_by"
                ),
                {"limit": limits.decisions},
            )
            # The intentions those decisions were between, named by the same decisions
            # read again in a sub-select (the same snapshot): issued with the rest, not
            # after the decisions' rows are read (on PostgreSQL a round trip fewer).
            # (A sub-select, not a WITH: a statement that starts with SELECT is known to be a
            # read, and waits to go with the others.)
            latest = _DECIDED.format(columns="intention_a, intention_b")
            side_rows = conn.execute(
                f"SELECT i.id, i.text, {visible('i')} AS seen, i.status, i.owner_instance"
                f" FROM intentions i WHERE i.id IN (SELECT intention_a FROM ({latest}) a"
                f" UNION ALL SELECT intention_b FROM ({latest}) b)",
                {**params, "limit": limits.decisions},
            )
            # Reads `visible` would empty for this audience are not run (word recall from
            # messages leaves this conversation out; notes need a conversation or a person).
            sees_elsewhere = sees_other_conversations(audience, conversation_id)
            sees_notes = sees_any_conversation(audience)
            query = recall_query(text)
            words = {**params, "q": query, "limit": limits.recall}
            recall_rows = (
                conn.execute(_WORD_RECALL_MESSAGES, words) if query and sees_elsewhere else []
            )
            note_rows = conn.execute(_WORD_RECALL_NOTES, words) if query and sees_notes else []
            about_rows = (
                conn.execute(
                    f"{_VIEW_NOTE} WHERE n.person_id = :speaker AND {visible('n')}"
                    " ORDER BY n.id DESC LIMIT :limit",
                    {**params, "limit": limits.about_person},
                )
                if sees_notes
                else []
            )
            speaker_row = conn.execute(
                "SELECT (SELECT name FROM people WHERE id = :speaker) AS name,"
                " (SELECT timezone FROM people WHERE id = :speaker) AS timezone,"
                " EXISTS (SELECT 1 FROM messages WHERE conversation_id = :here"
                " AND direction = 'out' AND model = 'mirror/offline') AS notice",
                params,
            )
            # Recall by meaning's reads: the index's news, and the rows it finds as it stands.
            by_meaning = RecallRequest(
                meaning,
                audience,
                conversation_id,
                limits.recall,
                lambda conn, ids: visible_messages_in(conn, params, ids),
                lambda conn, ids: visible_notes_in(conn, params, ids),
                speaker=person_id,
            )
            recall_asked = self.ask_recall_in(conn, by_meaning)
            # Then fetch, in the order they were issued.
            history = [_view_message(row) for row in history_rows][::-1]
            elsewhere = [_view_message(row) for row in elsewhere_rows]
            recent: dict[str, list[ViewMessage]] = {}
            for found in recent_rows:
                recent.setdefault(found["instance_id"], []).append(_view_message(found))
            instances = [
                _view_instance(row, recent.get(row["id"], []), now, dead_after_s)
                for row in instance_rows
            ]
            intentions = [
                ViewIntention(
                    id=row["id"],
                    owner_instance=row["owner_instance"],
                    entrance=row["entrance"],
                    person_name=row["person_name"],
                    about_this_person=row["person_id"] == person_id,
                    text=row["text"],
                    subject=row["subject"],
                    due_at=from_epoch(row["due_at"]),
                    status=row["status"],
                    target_entrance=row["target_entrance"],
                )
                for row in intention_rows
            ]
            decided = decided_rows.fetchall()
            recall: list[ViewMessage] = [_view_message(row) for row in recall_rows]
            notes: list[ViewNote] = [_view_note(row) for row in note_rows]
            about_person: list[ViewNote] = [_view_note(row) for row in about_rows]
            speaker = speaker_row.fetchone()
            soul = active_soul_in(conn, soul_row.fetchone()[0], self._soul)
            self._soul = soul
            recall_intentions: list[ViewIntention] = []  # found by meaning only (issue 21)
            if meaning is not None:
                recall, notes, recall_intentions = self.recall_by_meaning_in(
                    conn,
                    by_meaning,
                    incoming_id=incoming_id,
                    text=text,
                    words=recall,
                    word_notes=notes,
                    asked=recall_asked,
                )
            sides = {row["id"]: row for row in side_rows}
            decisions = [_view_decision(row, sides) for row in decided]
            notice = speaker["notice"]
            return TurnView(
                soul=soul,
                speaker_name=speaker["name"],
                speaker_timezone=speaker["timezone"],
                instances=instances,
                intentions=intentions,
                decisions=decisions,
                recall=recall,
                recall_notes=notes,
                recall_intentions=recall_intentions,
                about_person=about_person,
                elsewhere=elsewhere,
                history=history,
                offline_notice_given=bool(notice),
            )

        return await self.read(run)

    async def merge_word_indexes(self, pages: int) -> list[str]:
        """One merge step of each word index (`merge_word_index_in`), each in its own short
        write: the indexes that had segments to merge (there may be more). On PostgreSQL,
        whose text search keeps its own index, there is nothing to merge."""
        if self.engine != "sqlite":
            return []
        return [
            index for index in WORD_INDEXES if await self.write(merge_word_index_in, index, pages)
        ]
