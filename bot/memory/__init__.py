"""memory.db: the ONLY code in MirrorOS that speaks SQL.

Every instance (one OS process per entrance) shares this one SQLite database; it is how the
persona's instances know what the others said, promised and learned. `Memory` combines the
stores below; each store's methods are typed (pydantic in and out) and each logical write is
one short `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

import sqlite3

from bot.memory.catchup_store import CatchupStore
from bot.memory.conversation_store import ConversationStore, Recorded, fts_query
from bot.memory.coordinator_store import CoordinatorStore, LeaseLost, Outgoing
from bot.memory.database import (
    Database,
    MemoryDbError,
    MemoryUnavailable,
    SchemaTooNew,
)
from bot.memory.guard_store import GuardStore
from bot.memory.intention_store import IntentionStore, ItemError, NewIntention
from bot.memory.mirror_store import MirrorStore, ViewLimits
from bot.memory.outbox_store import OutboxStore
from bot.memory.presence_store import Lease, PresenceStore
from bot.memory.soul_store import SoulStore
from bot.memory.turn_store import Provenance, StoredTurn, TurnRecord, TurnStore
from bot.models import Status

__all__ = [
    "GuardStore",
    "ItemError",
    "Lease",
    "LeaseLost",
    "Memory",
    "MemoryDbError",
    "MemoryUnavailable",
    "NewIntention",
    "Outgoing",
    "Provenance",
    "Recorded",
    "SchemaTooNew",
    "StoredTurn",
    "TurnRecord",
    "ViewLimits",
    "fts_query",
]


class Memory(
    GuardStore,
    CatchupStore,
    ConversationStore,
    MirrorStore,
    TurnStore,
    IntentionStore,
    CoordinatorStore,
    OutboxStore,
    SoulStore,
    PresenceStore,
    Database,
):
    async def status(self, dead_after_s: float) -> Status:
        def counts(conn: sqlite3.Connection) -> sqlite3.Row:
            return conn.execute(
                "SELECT"
                " (SELECT count(*) FROM messages) AS messages,"
                " (SELECT count(*) FROM intentions WHERE status IN ('open', 'conflicted'))"
                "   AS open_intentions,"
                " (SELECT count(*) FROM conflicts WHERE status IN ('open', 'surfaced'))"
                "   AS open_conflicts,"
                " (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending'))"
                "   AS pending_outbox"
            ).fetchone()

        row = await self.read(counts)
        instances = await self.instances()
        now = self.now
        alive = {
            item.id: item.status == "alive" and now - item.last_seen.timestamp() < dead_after_s
            for item in instances
        }
        return Status(
            memory_path=str(self.path),
            schema_version=self.schema_version,
            soul=await self.active_soul(),
            instances=instances,
            alive=alive,
            messages=row["messages"],
            open_intentions=row["open_intentions"],
            open_conflicts=row["open_conflicts"],
            pending_outbox=row["pending_outbox"],
        )
