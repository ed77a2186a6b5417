"""What an entrance needs to catch up on messages that arrived while it was down."""

from __future__ import annotations

import sqlite3

from bot.memory.database import Database


class CatchupStore(Database):
    async def latest_platform_ids(self, entrance: str) -> dict[str, str]:
        """For each conversation of `entrance` (by its external id), the platform id of the
        newest incoming message memory.db holds for it.

        Ids are TEXT; the newest is the largest by length, then by value (numeric ids such
        as Discord snowflakes grow with time). Conversations with no platform message id
        are left out, and so are internal events (`bot.memory.due_store.due_event_id`).
        """

        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(
                "SELECT c.external_id AS conversation,"
                " (SELECT m.platform_message_id FROM messages m"
                "  WHERE m.conversation_id = c.id AND m.direction = 'in'"
                "  AND m.platform_message_id IS NOT NULL"
                # A promise's follow-up is an internal event ('due:ID'), not the platform's.
                "  AND m.platform_message_id NOT LIKE 'due:%'"
                "  ORDER BY length(m.platform_message_id) DESC, m.platform_message_id DESC"
                "  LIMIT 1) AS latest"
                " FROM conversations c WHERE c.entrance = ?",
                (entrance,),
            ).fetchall()

        latest: dict[str, str] = {}
        for row in await self.read(run):
            if row["latest"] is not None:
                latest[row["conversation"]] = row["latest"]
        return latest
