"""memory.db: the ONLY code in MirrorOS that speaks SQL.

Every instance (one OS process per entrance) shares this one SQLite database; it is how the
persona's instances know what the others said, promised and learned. `Memory` combines the
stores (bot/memory/*_store.py); each store's methods are typed (pydantic in and out) and
each logical write is one short `BEGIN IMMEDIATE` transaction. The records and errors those
methods take, return and raise live in `bot.memory.records`; code outside this package
imports them, like everything else, from `bot.memory`, never from a store module.

The names below load on first use (PEP 562), so that importing one light module of this
package (`bot.memory.snapshot` for `mirror status`) does not import asyncio, aiosqlite and
every store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.memory.admission_store import AdmissionStore
    from bot.memory.console_store import (
        TIMELINE_SQL,
        ConsoleRole,
        ConsoleSession,
        ConsoleUser,
        TimelineFilter,
        timeline_statement,
    )
    from bot.memory.conversation_store import fts_query, record_incoming_in
    from bot.memory.health import MemoryHealth, read_health
    from bot.memory.identity_store import IdentityStore
    from bot.memory.mirror_store import recall_query
    from bot.memory.records import (
        PERSON_KEY,
        Account,
        Admission,
        AdmitRequest,
        BucketSpec,
        CodeError,
        DueFollowUp,
        FactsRequest,
        GuardFacts,
        ItemDetails,
        ItemError,
        Lease,
        LeaseLost,
        LinkResult,
        NewIntention,
        Outgoing,
        PendingPairing,
        Provenance,
        Recorded,
        ReminderError,
        ReplyDelivery,
        SentMessage,
        SentSince,
        Side,
        StoredTurn,
        TurnRecord,
        Unfinished,
        Upcoming,
        ViewLimits,
    )
    from bot.memory.schema import MemoryDbError, MemoryUnavailable, SchemaTooNew
    from bot.memory.store import Memory
    from bot.memory.turn_store import store_turn_in

_WHERE = {
    "PERSON_KEY": "bot.memory.records",
    "Account": "bot.memory.records",
    "Admission": "bot.memory.records",
    "AdmissionStore": "bot.memory.admission_store",
    "AdmitRequest": "bot.memory.records",
    "BucketSpec": "bot.memory.records",
    "CodeError": "bot.memory.records",
    "ConsoleRole": "bot.memory.console_store",
    "ConsoleSession": "bot.memory.console_store",
    "ConsoleUser": "bot.memory.console_store",
    "TimelineFilter": "bot.memory.console_store",
    # The timeline's statements, for the tests that pin their query plans.
    "TIMELINE_SQL": "bot.memory.console_store",
    "timeline_statement": "bot.memory.console_store",
    "DueFollowUp": "bot.memory.records",
    "FactsRequest": "bot.memory.records",
    "GuardFacts": "bot.memory.records",
    "IdentityStore": "bot.memory.identity_store",
    "ItemDetails": "bot.memory.records",
    "ItemError": "bot.memory.records",
    "Lease": "bot.memory.records",
    "LeaseLost": "bot.memory.records",
    "LinkResult": "bot.memory.records",
    "Memory": "bot.memory.store",
    "MemoryHealth": "bot.memory.health",
    "MemoryDbError": "bot.memory.schema",
    "MemoryUnavailable": "bot.memory.schema",
    "NewIntention": "bot.memory.records",
    "Outgoing": "bot.memory.records",
    "PendingPairing": "bot.memory.records",
    "Provenance": "bot.memory.records",
    "Recorded": "bot.memory.records",
    "ReminderError": "bot.memory.records",
    "ReplyDelivery": "bot.memory.records",
    "Unfinished": "bot.memory.records",
    "Upcoming": "bot.memory.records",
    "SchemaTooNew": "bot.memory.schema",
    "SentMessage": "bot.memory.records",
    "SentSince": "bot.memory.records",
    "Side": "bot.memory.records",
    "StoredTurn": "bot.memory.records",
    "TurnRecord": "bot.memory.records",
    "ViewLimits": "bot.memory.records",
    "fts_query": "bot.memory.conversation_store",
    "read_health": "bot.memory.health",
    "record_incoming_in": "bot.memory.conversation_store",
    "recall_query": "bot.memory.mirror_store",
    "store_turn_in": "bot.memory.turn_store",
}

__all__ = [
    "PERSON_KEY",
    "TIMELINE_SQL",
    "Account",
    "Admission",
    "AdmissionStore",
    "AdmitRequest",
    "BucketSpec",
    "CodeError",
    "ConsoleRole",
    "ConsoleSession",
    "ConsoleUser",
    "DueFollowUp",
    "FactsRequest",
    "GuardFacts",
    "IdentityStore",
    "ItemDetails",
    "ItemError",
    "Lease",
    "LeaseLost",
    "LinkResult",
    "Memory",
    "MemoryDbError",
    "MemoryHealth",
    "MemoryUnavailable",
    "NewIntention",
    "Outgoing",
    "PendingPairing",
    "Provenance",
    "Recorded",
    "ReminderError",
    "ReplyDelivery",
    "SchemaTooNew",
    "SentMessage",
    "SentSince",
    "Side",
    "StoredTurn",
    "TimelineFilter",
    "TurnRecord",
    "Unfinished",
    "Upcoming",
    "ViewLimits",
    "fts_query",
    "read_health",
    "recall_query",
    "record_incoming_in",
    "store_turn_in",
    "timeline_statement",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
