"""The SQL of the hot queries, named in one place for the tests that pin their query plans.

Each statement stays next to the store that runs it; this module only gathers the ones a
test checks with EXPLAIN QUERY PLAN (an index seek, never a scan), so tests need not know
which store module holds which query. Nothing in the running bot imports it, and it must
never hold SQL of its own.
"""

from __future__ import annotations

from bot.memory.admission_store import BOT_HOUR_SQL, RECENT_INCOMING_SQL
from bot.memory.conversation_store import SENT_SINCE_SQL
from bot.memory.identity_store import GRANTED_SQL
from bot.memory.mirror_store import RECENT_PER_INSTANCE_SQL
from bot.memory.outbox_store import DUE_IDS_SQL, due_params
from bot.memory.turn_store import REPLY_ID_SQL

__all__ = [
    "BOT_HOUR_SQL",
    "DUE_IDS_SQL",
    "GRANTED_SQL",
    "RECENT_INCOMING_SQL",
    "RECENT_PER_INSTANCE_SQL",
    "REPLY_ID_SQL",
    "SENT_SINCE_SQL",
    "due_params",
]
