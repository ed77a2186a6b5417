"""`Memory`: every store of memory.db in one object, over one `Database` (two connections)."""

from __future__ import annotations

from bot.memory.admission_store import AdmissionStore
from bot.memory.catchup_store import CatchupStore
from bot.memory.console_store import ConsoleStore
from bot.memory.conversation_store import ConversationStore
from bot.memory.coordinator_store import CoordinatorStore
from bot.memory.database import Database
from bot.memory.due_store import DueStore
from bot.memory.identity_store import IdentityStore
from bot.memory.intention_store import IntentionStore
from bot.memory.mirror_store import MirrorStore
from bot.memory.outbox_store import OutboxStore
from bot.memory.presence_store import PresenceStore
from bot.memory.reminder_store import ReminderStore
from bot.memory.snapshot import status_in
from bot.memory.soul_store import SoulStore
from bot.memory.turn_store import TurnStore
from bot.memory.vector_store import VectorStore
from bot.models import Status


class Memory(
    AdmissionStore,
    IdentityStore,
    CatchupStore,
    ConversationStore,
    MirrorStore,
    VectorStore,
    TurnStore,
    IntentionStore,
    DueStore,
    ReminderStore,
    CoordinatorStore,
    OutboxStore,
    SoulStore,
    PresenceStore,
    ConsoleStore,
    Database,
):
    async def status(self, dead_after_s: float) -> Status:
        return await self.read(status_in, self.now, dead_after_s, self.path, self.schema_version)
