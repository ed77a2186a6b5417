"""memory.db: the ONLY code in MirrorOS that speaks SQL.

Every instance (one OS process per entrance) shares this one SQLite database; it is how the
persona's instances know what the others said, promised and learned. `Memory` combines the
stores (bot/memory/*_store.py); each store's methods are typed (pydantic in and out) and
each logical write is one short `BEGIN IMMEDIATE` transaction.

The names below load on first use (PEP 562), so that importing one light module of this
package (`bot.memory.snapshot` for `mirror status`) does not import asyncio, aiosqlite and
every store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.memory.conversation_store import Recorded, fts_query
    from bot.memory.coordinator_store import LeaseLost, Outgoing
    from bot.memory.guard_store import GuardStore
    from bot.memory.intention_store import ItemError, NewIntention
    from bot.memory.mirror_store import ViewLimits
    from bot.memory.presence_store import Lease
    from bot.memory.schema import MemoryDbError, MemoryUnavailable, SchemaTooNew
    from bot.memory.store import Memory
    from bot.memory.turn_store import Provenance, StoredTurn, TurnRecord

_WHERE = {
    "GuardStore": "bot.memory.guard_store",
    "ItemError": "bot.memory.intention_store",
    "Lease": "bot.memory.presence_store",
    "LeaseLost": "bot.memory.coordinator_store",
    "Memory": "bot.memory.store",
    "MemoryDbError": "bot.memory.schema",
    "MemoryUnavailable": "bot.memory.schema",
    "NewIntention": "bot.memory.intention_store",
    "Outgoing": "bot.memory.coordinator_store",
    "Provenance": "bot.memory.turn_store",
    "Recorded": "bot.memory.conversation_store",
    "SchemaTooNew": "bot.memory.schema",
    "StoredTurn": "bot.memory.turn_store",
    "TurnRecord": "bot.memory.turn_store",
    "ViewLimits": "bot.memory.mirror_store",
    "fts_query": "bot.memory.conversation_store",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
